#!/usr/bin/python3
"""A model of the Ochothon portal's `toolset` command (reference/ochothon-portal.md
§2-3; autodesk-cloud/ochothon images/portal/resources/toolset): its dispatcher
and every tool's argparse table, written from the real source with the stdlib
argparse. Used by tests/grammar_differential.rs to read the argv lists a real
/bin/sh produced from servo's canonical lines the way the portal would.

Input (stdin): records `<argc>\\0<arg>\\0...<arg>\\0`, each the argv `toolset`
received (the shell function standing for it prints `printf '%s\\0' "$#" "$@"`).
Output (stdout): one JSON object per record, in order:
  {"tags": [...every token equal to a tag, in order...],
   "tool": <the tool run, or null>, "ok": bool, "error": <why not ok>,
   "args": {<dest>: <value>...}, "defaults": {<dest>: <default>...},
   "unknown": [...parse_known_args leftovers (exec)...]}

Which tool the dispatcher picks among several matching tags depends on its
dict's order, which the model does not guess: it reports them all and the
test requires exactly one, the first token.

Tools: the current toolset's (bump deploy exec grep kill log ls off on poll
port reset scale), plus the retired ones a portal of another version may
still run: `ping <yaml> [clusters...] -j` (2015-05 to 2015-10), `nodes`
(no options; retired 2015-11), `put`, `shell`, `status`.
"""

import argparse
import json
import sys


class ParseError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """The tool's `_Parser`: an error is a usage message and exit 1."""

    def error(self, message):
        raise ParseError(message)

    def exit(self, status=0, message=None):
        # `-h`/`--help` print the usage and exit: not a command that runs.
        raise ParseError('exit %s %s' % (status, message or '(help)'))

    def print_help(self, file=None):
        pass

    def print_usage(self, file=None):
        pass


def clusters_opt(p):
    p.add_argument('clusters', type=str, nargs='?', default='*')


def clusters_many(p):
    p.add_argument('clusters', type=str, nargs='+')


def indices(p, long=True):
    names = ['-i', '--indices'] if long else ['-i']
    p.add_argument(*names, action='store', dest='indices', type=int, nargs='+')


def j(p, long=False):
    if long:
        p.add_argument('-j', '--json', action='store_true')
    else:
        p.add_argument('-j', action='store_true', dest='json')


def timeout(p):
    p.add_argument('-t', action='store', dest='timeout', type=int, default=60)


def force(p):
    p.add_argument('--force', action='store_true', dest='force')


def t_ls(p):
    j(p)


def t_grep(p):
    clusters_opt(p)
    j(p, long=True)


def t_port(p):
    p.add_argument('port', type=int, nargs=1)
    clusters_opt(p)
    j(p, long=True)


def t_log(p):
    clusters_opt(p)
    p.add_argument('-l', action='store_true', dest='long')
    indices(p)


def t_kill(p):
    clusters_many(p)
    indices(p, long=False)
    j(p)
    timeout(p)
    force(p)


def t_offonreset(p):
    clusters_many(p)
    indices(p)
    j(p)
    timeout(p)
    force(p)


def t_scale(p):
    clusters_many(p)
    p.add_argument('-f', action='store', dest='factor', default='+1')
    p.add_argument('-g', action='store', type=int, dest='group')
    j(p)
    timeout(p)
    p.add_argument('--fifo', action='store_true', dest='fifo')


def t_bump(p):
    clusters_many(p)
    j(p)
    timeout(p)
    p.add_argument('-v', action='store', dest='version', type=str, default='latest')
    p.add_argument('--strict', action='store_true', dest='strict')


def t_deploy(p):
    p.add_argument('containers', type=str, nargs='+')
    j(p)
    p.add_argument('-n', action='store', dest='namespace', type=str, default='marathon')
    p.add_argument('-o', action='store', dest='overrides', type=str, nargs='+')
    p.add_argument('-p', action='store', dest='pods', type=int)
    p.add_argument('-r', action='store', dest='release', type=str)
    p.add_argument('-s', action='store', dest='suffix', type=str)
    timeout(p)
    p.add_argument('--strict', action='store_true', dest='strict')


def t_exec(p):
    p.add_argument('clusters', type=str, nargs=1)
    p.add_argument('cmdline', type=str, nargs='+')
    indices(p)
    j(p, long=True)
    timeout(p)
    force(p)


# Retired tools (git history of the same repository).
def t_ping(p):
    p.add_argument('yaml', nargs=1)
    p.add_argument('clusters', type=str, nargs='*', default='*')
    j(p)


def t_nodes(p):
    pass


def t_put(p):
    p.add_argument('file', type=str, nargs=1)
    p.add_argument('clusters', type=str, nargs='*', default='*')
    indices(p)
    p.add_argument('-w', '--where', action='store', dest='where', type=str, default='/')
    force(p)


def t_shell(p):
    p.add_argument('snippet', type=str, nargs=1)
    p.add_argument('clusters', type=str, nargs='*', default='*')
    indices(p)
    force(p)


def t_status(p):
    p.add_argument('clusters', type=str, nargs='*', default='*')


# tag -> (customize, strict)
TOOLS = {
    'ls': (t_ls, True),
    'grep': (t_grep, True),
    'poll': (t_grep, True),
    'port': (t_port, True),
    'log': (t_log, True),
    'kill': (t_kill, True),
    'off': (t_offonreset, True),
    'on': (t_offonreset, True),
    'reset': (t_offonreset, True),
    'scale': (t_scale, True),
    'bump': (t_bump, True),
    'deploy': (t_deploy, True),
    'exec': (t_exec, False),
    'ping': (t_ping, True),
    'nodes': (t_nodes, True),
    'put': (t_put, True),
    'shell': (t_shell, True),
    'status': (t_status, True),
}


def build(tag):
    customize, strict = TOOLS[tag]
    p = Parser(prog=tag)
    customize(p)
    # tool.py's Template.run adds it after customize().
    p.add_argument('-d', '--debug', action='store_true')
    return p, strict


PARSERS = {tag: build(tag) for tag in TOOLS}
DEFAULTS = {
    tag: {a.dest: a.default for a in p._actions if a.dest != 'help'}
    for tag, (p, _) in PARSERS.items()
}


def dispatcher():
    p = Parser(prog='toolset', prefix_chars='+')
    p.add_argument('command', type=str)
    p.add_argument('extra', type=str, nargs='*')
    return p


DISPATCHER = dispatcher()


def model(argv):
    out = {'tags': [], 'tool': None, 'ok': False, 'error': None,
           'args': None, 'defaults': None, 'unknown': []}
    try:
        top = DISPATCHER.parse_args(argv)
    except ParseError as e:
        out['error'] = 'dispatcher: %s' % e
        return out
    total = [top.command] + top.extra
    out['tags'] = [t for t in total if t in TOOLS or t == 'help']
    if top.command == 'help':
        # main.py prints the list of tools and exits 0, whatever follows.
        out['tool'] = 'help'
        out['ok'] = True
        out['args'] = {'extra': top.extra}
        return out
    matched = [t for t in TOOLS if t in total]
    if len(matched) != 1:
        out['error'] = 'dispatcher: %d tools match' % len(matched)
        return out
    tag = matched[0]
    out['tool'] = tag
    parser, strict = PARSERS[tag]
    try:
        if strict:
            args = parser.parse_args(top.extra)
            unknown = []
        else:
            args, unknown = parser.parse_known_args(top.extra)
    except ParseError as e:
        out['error'] = '%s: %s' % (tag, e)
        return out
    out['ok'] = True
    out['args'] = vars(args)
    out['defaults'] = DEFAULTS[tag]
    out['unknown'] = unknown
    return out


def records(data):
    fields = data.split(b'\0')
    if fields and fields[-1] == b'':
        fields.pop()
    i = 0
    while i < len(fields):
        n = int(fields[i])
        yield [f.decode('utf-8', 'surrogateescape') for f in fields[i + 1:i + 1 + n]]
        i += 1 + n


def main():
    data = sys.stdin.buffer.read()
    w = sys.stdout.write
    for argv in records(data):
        r = model(argv)
        r['argv'] = argv
        w(json.dumps(r, ensure_ascii=True))
        w('\n')


if __name__ == '__main__':
    main()
