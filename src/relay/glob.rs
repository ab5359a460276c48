//! Shell-style glob matching (`fnmatch`, as the toolset matches cluster
//! names): the simulator's cluster globs and the tenants' `images`.

/// Shell-style match of `glob` (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`) against `name`.
pub fn glob_match(glob: &str, name: &str) -> bool {
    fn class(pat: &[char], c: char) -> Option<(bool, usize)> {
        // Returns (matched, length of the class including brackets).
        let mut i = 1;
        let negate = matches!(pat.get(1), Some('!') | Some('^'));
        if negate {
            i += 1;
        }
        let mut hit = false;
        let start = i;
        while i < pat.len() && (pat[i] != ']' || i == start) {
            if pat.get(i + 1) == Some(&'-') && pat.get(i + 2).is_some_and(|&e| e != ']') {
                hit |= pat[i] <= c && c <= pat[i + 2];
                i += 3;
            } else {
                hit |= pat[i] == c;
                i += 1;
            }
        }
        (i < pat.len()).then_some((hit != negate, i + 1))
    }
    /// Whether the item of `p` at its start (not a `*`) matches `c`, and its length.
    fn one(p: &[char], c: char) -> Option<usize> {
        match p[0] {
            '?' => Some(1),
            '[' => match class(p, c) {
                Some((true, len)) => Some(len),
                Some((false, _)) => None,
                // An unclosed `[` is a literal.
                None => (c == '[').then_some(1),
            },
            l => (l == c).then_some(1),
        }
    }
    // One pass, going back only to the latest `*` (which then takes one more
    // character): O(len(p) * len(n)). Recursing into every split of every `*`
    // is exponential in the number of stars, and a script chooses the glob.
    fn go(p: &[char], n: &[char]) -> bool {
        let (mut pi, mut ni) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ni < n.len() {
            if p.get(pi) == Some(&'*') {
                pi += 1;
                star = Some((pi, ni));
                continue;
            }
            if let Some(len) = (pi < p.len()).then(|| one(&p[pi..], n[ni])).flatten() {
                pi += len;
                ni += 1;
                continue;
            }
            let Some((after_star, taken)) = star else {
                return false;
            };
            star = Some((after_star, taken + 1));
            pi = after_star;
            ni = taken + 1;
        }
        p[pi..].iter().all(|&c| c == '*')
    }
    let p: Vec<char> = glob.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_stars_match_in_linear_time() {
        let glob = format!("{}x", "*".repeat(40));
        assert!(!glob_match(&glob, "marathon.portal.cluster.name"));
        assert!(glob_match(&format!("{glob}*"), "marathon.x"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*servo", "marathon.servo"));
        assert!(glob_match("app.*", "app.web"));
        assert!(!glob_match("app.*", "apps.web"));
        assert!(glob_match("a?p.w[a-f]b", "app.web"));
        assert!(glob_match("a.[!x]", "a.y"));
        assert!(!glob_match("a.[!x]", "a.x"));
        assert!(glob_match("a.[", "a.["));
        assert!(!glob_match("web", "app.web"));
    }

    /// The former matcher: obviously right, exponential in the stars.
    fn reference(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| reference(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && reference(&p[1..], &n[1..]),
            Some('[') => {
                let close = p.iter().skip(2).position(|&c| c == ']').map(|i| i + 2);
                match (n.first(), close) {
                    (None, _) => false,
                    (Some(&c), None) => c == '[' && reference(&p[1..], &n[1..]),
                    (Some(&c), Some(end)) => {
                        let body = &p[1..end];
                        let (neg, body) = match body.first() {
                            Some('!') | Some('^') => (true, &body[1..]),
                            _ => (false, body),
                        };
                        let mut hit = false;
                        let mut i = 0;
                        while i < body.len() {
                            if body.get(i + 1) == Some(&'-') && i + 2 < body.len() {
                                hit |= body[i] <= c && c <= body[i + 2];
                                i += 3;
                            } else {
                                hit |= body[i] == c;
                                i += 1;
                            }
                        }
                        hit != neg && reference(&p[end + 1..], &n[1..])
                    }
                }
            }
            Some(&c) => n.first() == Some(&c) && reference(&p[1..], &n[1..]),
        }
    }

    #[test]
    fn linear_matcher_agrees_with_the_reference() {
        let items = ["a", "b", "*", "?", "[ab]", "[!a]", "[a-b]", "["];
        let mut globs = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = globs
                .iter()
                .flat_map(|g| items.iter().map(move |i| format!("{g}{i}")))
                .collect();
            globs.extend(longer);
        }
        globs.sort();
        globs.dedup();
        let mut names = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|n| ["a", "b", "["].map(|c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        names.sort();
        names.dedup();
        for g in &globs {
            let pc: Vec<char> = g.chars().collect();
            for n in &names {
                let nc: Vec<char> = n.chars().collect();
                assert_eq!(glob_match(g, n), reference(&pc, &nc), "{g:?} vs {n:?}");
            }
        }
    }
}
