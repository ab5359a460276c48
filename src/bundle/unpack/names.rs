//! Entry names and symlink targets (SPEC §3.2), judged lexically before anything
//! is written. A name is kept as its normalised key: components joined with `/`,
//! none of them empty, `.` or `..`; the bundle's root is the empty key.

/// Longest accepted name or link target, in bytes.
pub const MAX_NAME_BYTES: usize = 4096;
/// Deepest accepted name, in components.
pub const MAX_DEPTH: usize = 64;

/// Splits a key into its components (none for the root).
pub fn components(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    key.split(|b| *b == b'/').filter(|c| !c.is_empty())
}

/// The key of the directory holding `key` and the last component.
pub fn split_last(key: &[u8]) -> (&[u8], &[u8]) {
    match key.iter().rposition(|b| *b == b'/') {
        Some(i) => (&key[..i], &key[i + 1..]),
        None => (&[], key),
    }
}

/// Every proper ancestor of `key` except the root, outermost first (`a`, `a/b` for `a/b/c`).
pub fn ancestors(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    key.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &key[..i])
}

/// Shows a name in an error message: lossy UTF-8, cut short when huge.
pub fn display(raw: &[u8]) -> String {
    const SHOWN: usize = 200;
    if raw.len() > SHOWN {
        format!("{}...", String::from_utf8_lossy(&raw[..SHOWN]))
    } else {
        String::from_utf8_lossy(raw).into_owned()
    }
}

/// Checks an entry name and returns its key (`./a//b/` → `a/b`).
pub fn normalise(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.len() > MAX_NAME_BYTES {
        return Err(format!("the name is longer than {MAX_NAME_BYTES} bytes"));
    }
    if raw.contains(&0) {
        return Err("the name contains a NUL byte".into());
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute names are not allowed".into());
    }
    let mut key = Vec::with_capacity(raw.len());
    let mut depth = 0;
    for part in components(raw) {
        match part {
            b"." => continue,
            b".." => return Err("the name has a .. component".into()),
            _ => {}
        }
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(format!("the name is more than {MAX_DEPTH} levels deep"));
        }
        if !key.is_empty() {
            key.push(b'/');
        }
        key.extend_from_slice(part);
    }
    Ok(key)
}

/// Checks the target of the symlink `link` (a key) and returns the key it
/// resolves to, from the link's own directory.
///
/// `..` is accepted only at the start of the target: after a name, the kernel
/// would resolve `..` from wherever that name leads (it may be another symlink),
/// which a lexical check cannot follow.
pub fn symlink_target(link: &[u8], raw: &[u8]) -> Result<Vec<u8>, String> {
    let shown = display(raw);
    if raw.is_empty() {
        return Err("the symlink target is empty".into());
    }
    if raw.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the symlink target is longer than {MAX_NAME_BYTES} bytes"
        ));
    }
    if raw.contains(&0) {
        return Err("the symlink target contains a NUL byte".into());
    }
    if raw.first() == Some(&b'/') {
        return Err(format!("the symlink target {shown} is absolute"));
    }
    let mut resolved: Vec<&[u8]> = components(split_last(link).0).collect();
    let mut named = false;
    for part in components(raw) {
        match part {
            b"." => {}
            b".." if named => {
                return Err(format!(
                "the symlink target {shown} has a .. after a name (only leading ../ is accepted)"
            ))
            }
            b".." => {
                if resolved.pop().is_none() {
                    return Err(format!("the symlink target {shown} leaves the bundle"));
                }
            }
            _ => {
                named = true;
                resolved.push(part);
            }
        }
    }
    Ok(resolved.join(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_names() {
        assert_eq!(normalise(b"./a//b/").unwrap(), b"a/b");
        assert_eq!(normalise(b"a/./b").unwrap(), b"a/b");
        assert_eq!(normalise(b".").unwrap(), b"");
        assert_eq!(normalise(b"").unwrap(), b"");
        assert!(normalise(b"/etc/passwd").unwrap_err().contains("absolute"));
        assert!(normalise(b"a/../b").unwrap_err().contains(".."));
        assert!(normalise(b"..").unwrap_err().contains(".."));
        assert!(normalise(b"a\0b").unwrap_err().contains("NUL"));
        // `...` and `..x` are ordinary names.
        assert_eq!(normalise(b".../..x").unwrap(), b".../..x");
    }

    #[test]
    fn limits_length_and_depth() {
        let long = vec![b'a'; MAX_NAME_BYTES];
        assert!(normalise(&long).is_ok());
        let longer = vec![b'a'; MAX_NAME_BYTES + 1];
        assert!(normalise(&longer).unwrap_err().contains("longer"));
        let deep = vec!["d"; MAX_DEPTH].join("/");
        assert!(normalise(deep.as_bytes()).is_ok());
        let deeper = vec!["d"; MAX_DEPTH + 1].join("/");
        assert!(normalise(deeper.as_bytes()).unwrap_err().contains("deep"));
        // `.` components do not count.
        let dotted = format!("{deep}/./.");
        assert!(normalise(dotted.as_bytes()).is_ok());
    }

    #[test]
    fn walks_keys() {
        assert_eq!(split_last(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_last(b"c"), (&b""[..], &b"c"[..]));
        let up: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(up, vec![&b"a"[..], &b"a/b"[..]]);
        assert_eq!(ancestors(b"a").count(), 0);
        assert!(display(&[b'x'; 1000]).len() < 300);
    }

    #[test]
    fn resolves_symlink_targets() {
        assert_eq!(symlink_target(b"a/l", b"x").unwrap(), b"a/x");
        assert_eq!(symlink_target(b"a/b/l", b"../x/./y").unwrap(), b"a/x/y");
        assert_eq!(symlink_target(b"a/l", b"..").unwrap(), b"");
        assert_eq!(symlink_target(b"l", b".").unwrap(), b"");
        assert!(symlink_target(b"l", b"..").unwrap_err().contains("leaves"));
        assert!(symlink_target(b"a/l", b"../../etc")
            .unwrap_err()
            .contains("leaves"));
        assert!(symlink_target(b"l", b"/etc")
            .unwrap_err()
            .contains("absolute"));
        assert!(symlink_target(b"a/l", b"x/../..")
            .unwrap_err()
            .contains("after a name"));
        assert!(symlink_target(b"l", b"").unwrap_err().contains("empty"));
        assert!(symlink_target(b"l", b"a\0b").unwrap_err().contains("NUL"));
    }
}
