//! One `acls` entry, parsed exactly as the AWS agent's `AceInfo` does
//! (`[d[efault]:][u[ser]|g[roup]|m[ask]|o[ther]]:[name]:perm`, agent-behaviour.md §5.5).

use super::model::{AclEntry, AclKind};

fn invalid(ace: &str) -> String {
    format!(
        "The deployment failed because of a problem with the acls permission settings in the \
         application specification file. Invalid acl entry ({ace})."
    )
}

/// Parses one entry; the error is the AWS message for the first problem.
pub(super) fn parse_ace(ace: &str) -> Result<AclEntry, String> {
    // Ruby: ace.split(":", -1).reverse (keeps empty fields).
    let parts: Vec<&str> = ace.split(':').rev().collect();
    if !(2..=4).contains(&parts.len()) {
        return Err(invalid(ace));
    }
    let is = |s: &str, short: &str, long: &str| s == short || s == long;
    let mut default = false;
    if parts.len() == 4 {
        if !is(parts[3], "d", "default") {
            return Err(invalid(ace));
        }
        default = true;
    }
    let mut kind: Option<AclKind> = None;
    if parts.len() >= 3 {
        let p = parts[2];
        if is(p, "d", "default") {
            if default {
                return Err(invalid(ace));
            }
            default = true;
        } else if is(p, "m", "mask") {
            kind = Some(AclKind::Mask);
        } else if is(p, "o", "other") {
            kind = Some(AclKind::Other);
        } else if is(p, "g", "group") {
            kind = Some(AclKind::Group);
        } else if is(p, "u", "user") {
            kind = Some(AclKind::User);
        } else {
            return Err(invalid(ace));
        }
    }
    let mut name = String::new();
    let p = parts[1];
    if is(p, "m", "mask") {
        match kind {
            None => kind = Some(AclKind::Mask),
            Some(_) => name = "mask".to_owned(),
        }
    } else if is(p, "o", "other") {
        match kind {
            None => kind = Some(AclKind::Other),
            Some(_) => name = "other".to_owned(),
        }
    } else {
        kind.get_or_insert(AclKind::User);
        name = p.to_owned();
    }
    let kind = kind.expect("every branch above sets the kind");
    if matches!(kind, AclKind::Mask | AclKind::Other) && !name.is_empty() {
        return Err(invalid(ace));
    }
    if !default && kind != AclKind::Mask && name.is_empty() {
        return Err(format!(
            "The deployment failed because of a problem with the acls permission settings in the \
             application specification file. Use mode to set the base acl entry ({ace}). Update \
             the permissions section of the AppSpec file, and then try again."
        ));
    }
    let perm_text = parts[0];
    let mut chars = perm_text.chars();
    let perm = match (chars.next(), chars.next()) {
        (Some(c @ '0'..='7'), None) => c
            .to_digit(8)
            .and_then(|d| u8::try_from(d).ok())
            .unwrap_or(0),
        _ => {
            let mut perm = 0u8;
            for c in perm_text.chars() {
                match c {
                    'r' => perm |= 4,
                    'w' => perm |= 2,
                    'x' => perm |= 1,
                    '-' => {}
                    other => {
                        return Err(format!(
                            "The deployment failed because the access control list (ACL) named \
                             {ace} in the application specification file contains an invalid \
                             character ({other}). Correct the ACL in the hooks section of the \
                             AppSpec file, and then try again."
                        ));
                    }
                }
            }
            perm
        }
    };
    Ok(AclEntry {
        default,
        kind,
        name,
        perm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_round_trips() {
        let cases = [
            ("d:u:bob:7", "default:user:bob:rwx"),
            ("m:0", "mask::---"),
            ("u:bob:r-x", "user:bob:r-x"),
            ("bob:6", "user:bob:rw-"),
            ("g:staff:rw", "group:staff:rw-"),
            ("group:staff:4", "group:staff:r--"),
            ("default:g:staff:x", "default:group:staff:--x"),
            ("d:o:5", "default:other::r-x"),
            ("d:m:7", "default:mask::rwx"),
            ("mask:rwx", "mask::rwx"),
            ("d:u::7", "default:user::rwx"),
            ("u:m:7", "user:mask:rwx"),
            ("bob:", "user:bob:---"),
            ("user:bob:rwxrwx", "user:bob:rwx"),
        ];
        for (ace, want) in cases {
            let got = parse_ace(ace).unwrap_or_else(|e| panic!("{ace}: {e}"));
            assert_eq!(got.to_string(), want, "{ace}");
            // The canonical form parses back to the same entry.
            assert_eq!(parse_ace(want).expect("canonical parses"), got, "{want}");
        }
    }

    #[test]
    fn aws_messages() {
        let invalid = |a: &str| invalid(a);
        let base = |a: &str| {
            format!(
                "The deployment failed because of a problem with the acls permission settings in \
                 the application specification file. Use mode to set the base acl entry ({a}). \
                 Update the permissions section of the AppSpec file, and then try again."
            )
        };
        let cases = [
            ("7", invalid("7")),
            ("a:b:c:d:7", invalid("a:b:c:d:7")),
            ("x:u:bob:7", invalid("x:u:bob:7")),
            ("d:d:bob:7", invalid("d:d:bob:7")),
            ("z:bob:7", invalid("z:bob:7")),
            ("m:bob:7", invalid("m:bob:7")),
            ("o:bob:7", invalid("o:bob:7")),
            ("u::7", base("u::7")),
            ("o:7", base("o:7")),
            ("g::rw", base("g::rw")),
            (
                "u:bob:8",
                "The deployment failed because the access control list (ACL) named u:bob:8 in \
                 the application specification file contains an invalid character (8). Correct \
                 the ACL in the hooks section of the AppSpec file, and then try again."
                    .to_owned(),
            ),
            (
                "u:bob:rwz",
                "The deployment failed because the access control list (ACL) named u:bob:rwz in \
                 the application specification file contains an invalid character (z). Correct \
                 the ACL in the hooks section of the AppSpec file, and then try again."
                    .to_owned(),
            ),
        ];
        for (ace, want) in cases {
            assert_eq!(parse_ace(ace).expect_err(ace), want, "{ace}");
        }
    }
}
