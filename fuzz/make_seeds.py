#!/usr/bin/python3
"""Writes the hand-made seed corpus of every fuzz target into fuzz/corpus/.

Run from the repository's root: /usr/bin/python3 fuzz/make_seeds.py
The unpacker's seeds are the attack archives of tests/data/archives plus a few
good bundles; the decrypt seeds come from tests/data/aes_vectors.json. Inputs
the fuzzer found (crashes, once fixed) are added by hand as crash-<what>.
"""
import base64, glob, gzip, io, json, os, shutil, tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tgz(entries):
    """entries: (name, kind, payload) with kind file/dir/symlink/hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if kind == "file":
                info.size = len(payload)
                info.mode = 0o755 if name.endswith(".py") else 0o644
                tar.addfile(info, io.BytesIO(payload))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            tar.addfile(info)
    return buf.getvalue()


def unpack():
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/data/archives/*.tgz"))):
        shutil.copy(path, os.path.join(CORPUS, "unpack", "attack-" + os.path.basename(path)))
        # The bare tar too (the harness gzips what is not gzip): the fuzzer
        # then mutates headers, not deflate. Trailing zero blocks dropped.
        try:
            bare = gzip.decompress(open(path, "rb").read())
        except (OSError, EOFError):
            continue
        bare = bare.rstrip(b"\0")
        bare += b"\0" * (-len(bare) % 512)
        if bare and not bare.startswith(b"\x1f\x8b"):
            put("unpack", "bare-" + os.path.basename(path)[:-4] + ".tar", bare)
    put("unpack", "good-one-script.tgz", tgz([("deploy.py", "file", b"print('hello')\n")]))
    put("unpack", "good-tree.tgz", tgz([
        ("./", "dir", None),
        ("lib/", "dir", None),
        ("lib/util.py", "file", b"X = 1\n"),
        ("deploy.py", "file", b"import lib.util\n"),
        ("lib/alias.py", "symlink", "util.py"),
        ("up.py", "symlink", "lib/../deploy.py"),
        ("copy.py", "hardlink", "deploy.py"),
        ("secret.txt.aes", "file", b"Salted__12345678" + bytes(16)),
    ]))
    put("unpack", "good-empty-file.tgz", tgz([("empty.py", "file", b"")]))
    put("unpack", "bare-good-tree.tar", gzip.decompress(tgz([
        ("lib/", "dir", None),
        ("lib/util.py", "file", b"X = 1\n"),
        ("lib/alias.py", "symlink", "util.py"),
        ("copy.py", "hardlink", "lib/util.py"),
    ]))[:512 * 6])


def signature():
    put("signature", "sha1", "sha1=" + "ab" * 20 + "\n\n0")
    put("signature", "sha256", "sha256=" + "0F" * 32)
    put("signature", "v2-in-window", "v2=" + "12" * 32 + "\n1700000000\n1700000100")
    put("signature", "v2-expired", "v2=" + "12" * 32 + "\n1700000000\n1800000000")
    put("signature", "bad", "md5=00\n-1\nx")


def multipart():
    body = (b"--XyZ\r\n"
            b'Content-Disposition: form-data; name="note"\r\n\r\n'
            b"hello\r\n"
            b"--XyZ\r\n"
            b'Content-Disposition: form-data; name="tgz"; filename="upload.tgz"\r\n'
            b"Content-Type: application/gzip\r\n\r\n"
            b"\x1f\x8b\x08\x00archive-bytes\r\n"
            b"--XyZ--\r\n")
    ct = b"multipart/form-data; boundary=XyZ\n"
    put("multipart", "two-fields", ct + b"\xff" + body)
    put("multipart", "two-fields-small-chunks", ct + b"\x03" + body)
    put("multipart", "no-tgz", ct + b"\x40" + body.replace(b'name="tgz"', b'name="other"'))
    put("multipart", "truncated", ct + b"\x10" + body[:-12])
    put("multipart", "quoted-boundary", b'multipart/form-data; boundary="a b"\n\x20--a b\r\n'
        b'Content-Disposition: form-data; name="tgz"\r\n\r\nxx\r\n--a b--\r\n')


def decrypt():
    doc = json.load(open(os.path.join(ROOT, "tests/data/aes_vectors.json")))
    kdf_byte = {"evp_md5": 0, "evp_md5_nosalt": 0, "evp_sha256": 1,
                "evp_sha256_nosalt": 1, "pbkdf2_sha256_10000": 2}
    seen = set()
    for v in doc["vectors"]:
        kdf = kdf_byte.get(v["kdf"], 3)
        text = v.get("file_text_as_written")
        data = text.encode() if text else base64.b64decode(v["file_b64"])
        key = (v["kdf"], bool(text))
        if key in seen:
            continue
        seen.add(key)
        token = v["token"].encode()
        which = kdf | (0x80 if text else 0)
        put("decrypt", f"{v['kdf']}{'-a' if text else ''}", bytes([which, len(token)]) + token + data)
    for n in doc["negative"]:
        token = n["token"].encode()
        put("decrypt", "negative-" + n["case"], bytes([3, len(token)]) + token + base64.b64decode(n["file_b64"]))


def request():
    put("request", "one", "deploy.py")
    put("request", "many", "deploy.py+lib%2Ftest.py+a/b/c.py\nfoo: bar\nmy-secret-token: s3cr3t\nA_B: \n")
    put("request", "bad-names", "../x.py+%zz+.py\nld-preload: /x.so\npath: /bin\n9x: 1\n")
    put("request", "twice", "x.py\nfoo: 1\nFOO: 2\n")
    put("request", "nul-value", "x.py\nfoo: a\x00b\n")
    # Near the 4096-byte name limit, where the fuzzer's inputs rarely grow to.
    put("request", "long-name", "a" * 31 + "%C3%A9" + "b" * 4090 + ".py")


def policy():
    put("policy", "ls-one-ns", b"\x01ls -j\n{\"pay.web\": {}, \"payments.web\": {}}")
    put("policy", "deploy-two-ns", b"\x02deploy web.yml -n pay -j")
    put("policy", "deploy-odd", b"\x01deploy web.yml -jn marathon")
    put("policy", "exec", b"\x81exec pay.servo --force run x deploy.py")
    put("policy", "port", b"\x01port 80 -j\n\"{\\\"pay.x #1\\\": 1}\"")
    put("policy", "kill-outside", b"\x82kill *.web -j")
    put("policy", "unrestricted", b"\x00frobnicate x")


def tenants():
    put("tenants", "full", json.dumps({"default": False, "tenants": [
        {"name": "pay", "token": "t1", "require_signature": "v2", "aes_kdf": "pbkdf2",
         "namespaces": ["pay"], "commands": ["ls", "deploy"],
         "egress": ["10.0.0.0/8:80", "db.internal:443"], "limits": {"cpu_s": 5}},
        {"name": "web", "token": "t2", "require_signature": "any"}]}, indent=1))
    put("tenants", "default-only", '{"tenants": []}')
    put("tenants", "same-token", '{"tenants": [{"name": "a", "token": "tok"}]}')
    put("tenants", "bad-fields", '{"tenants": [{"name": "A B", "token": "x", "limits": [1]}, {"nope": 1}]}')
    put("tenants", "images-verbatim", '{"default": false, "tenants": [{"name": "p", "token": "x", "images": ["reg.example/p/*"], "verbatim": ["cpus", "container.docker.parameters.log-driver"]}, {"name": "q", "token": "y", "images": ["a b", ""], "verbatim": ["a..b"]}]}')
    put("tenants", "bad-egress", '{"default": false, "tenants": [{"name": "e", "token": "x", "egress": ["::1:99999", "10.0.0.0/33:1", "h:"]}]}')


def sim():
    put("sim", "session", "ls -j\ndeploy web.yml -n pay -p 3\nscale pay.web -f +2 -j\n"
        "grep pay.* -j\nport 80 pay.web -j\nkill pay.web\noff *\non *\nnodes\nhelp\n")
    put("sim", "scale", "scale marathon.* -f -5\nscale *.* -f 7 -j\npoll -j\nlog marathon.servo -j\n")
    # Found by fuzzing: a glob of many stars took exponential time.
    put("sim", "crash-many-stars", "ls " + "*" * 40 + "x -j\n")
    put("sim", "scale-huge", "scale marathon.* -f +9223372036854775807\nscale marathon.* -f --9223372036854775808\n")
    put("sim", "exec", "exec marathon.servo --force run ~/x a.py\nping -j\nreset marathon.*\nfrob\n\n")


def deploy_yaml():
    web = "cluster: web\nimage: registry.example.com/pay/web:1\nports:\n  - 8080\n  - 9000 19000 udp\nsettings:\n  motd: hello\n"
    put("deploy_yaml", "plain-web", web)
    put("deploy_yaml", "override", "settings: {motd: bye}\nverbatim: {cpus: 0.5, env: {A: b}}\n")
    put("deploy_yaml", "python-apply", 'cluster: !!python/object/apply:os.system ["id"]\nimage: nginx\n')
    put("deploy_yaml", "python-nested", web + 'verbatim:\n  env:\n    A: !!python/object/apply:os.system ["id"]\n')
    put("deploy_yaml", "python-key", '? !!python/object/apply:os.system ["id"]\n: x\n')
    put("deploy_yaml", "tag-directive", '%TAG !p! tag:yaml.org,2002:python/\n---\ncluster: !p!object/apply:os.system ["id"]\nimage: nginx\n')
    put("deploy_yaml", "verbatim-tag", 'cluster: web\nimage: nginx\nsettings: !<tag:yaml.org,2002:python/object/apply:os.system> ["id"]\n')
    lol = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for n in "bcdefghi":
        lol += f"{n}: &{n} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = n
    put("deploy_yaml", "billion-laughs", lol)
    put("deploy_yaml", "merge-key", "base: &a {cluster: web, image: nginx}\n<<: *a\n")
    put("deploy_yaml", "two-documents", "cluster: web\nimage: nginx\n---\ncluster: db\nimage: nginx\n")
    put("deploy_yaml", "privileged-param", "cluster: web\nimage: nginx\nverbatim:\n  container:\n    docker:\n      parameters: [{key: privileged, value: \"true\"}]\n")
    put("deploy_yaml", "privileged-flag", "cluster: web\nimage: nginx\nverbatim: {container: {docker: {privileged: true, network: HOST}}}\n")
    put("deploy_yaml", "host-path", "cluster: web\nimage: nginx\nverbatim:\n  container:\n    volumes:\n      - {containerPath: /h, hostPath: /, mode: RW}\n")
    put("deploy_yaml", "foreign-image", "cluster: web\nimage: evil.example/miner:1\n")
    put("deploy_yaml", "yaml11-scalars", "cluster: web\nimage: nginx\nsettings: {a: yes, b: 010, c: 2001-12-14, on: 1}\n")


if __name__ == "__main__":
    for f in (unpack, signature, multipart, decrypt, request, policy, tenants, sim, deploy_yaml):
        os.makedirs(os.path.join(CORPUS, f.__name__), exist_ok=True)
        f()
