//! Secrets read from files and commands' output, and kept from the
//! commands vault runs for the user's data. Shared by the CLI and the
//! server's jobs.

use std::io::Read;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The variables vault reads the repository password from: the password,
/// or where to find it (a file path or a command is not itself secret, but
/// it leads to the secret, and no other program needs it).
const PASSWORD_VARS: &[&str] = &[
    "VAULT_PASSWORD",
    "VAULT_PASSWORD_FILE",
    "VAULT_PASSWORD_COMMAND",
    "VAULT_TOKEN",
    "VAULT_TOKEN_FILE",
    "VAULT_TOKEN_COMMAND",
];

/// Removes vault's own secrets from the environment of a command vault
/// runs for the user's data (`snapshot --stdin-from-command`): the
/// password variables and every S3 credential variable the backend reads.
/// The command keeps everything else (`PGPASSWORD`, `AWS_PROFILE`,
/// `AWS_REGION`, ...): what it needs of its own it must be given under
/// names vault doesn't read.
pub fn without_vault_secrets(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for var in PASSWORD_VARS.iter().chain(crate::backend::s3::CREDENTIAL_VARS) {
        cmd.env_remove(var);
    }
    cmd
}

/// The longest first line read as a password from a file or a command.
const MAX_PASSWORD_LINE: usize = 64 << 10;

/// The first line of `r`, without its `\n`, as bytes (a password need not
/// be UTF-8). Read straight into one buffer taken up front and wiped when
/// dropped: a buffered reader or a growing `Vec` would leave copies of the
/// password in freed memory. `what` names the source in errors.
pub fn read_first_line(r: &mut impl Read, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_PASSWORD_LINE + 1]);
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(Error::Invalid(format!(
                "{what}: the first line is longer than {} KiB",
                MAX_PASSWORD_LINE >> 10
            )));
        }
        let n = match r.read(&mut buf[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Invalid(format!("reading {what}: {e}"))),
        };
        if n == 0 {
            break;
        }
        if let Some(nl) = buf[len..len + n].iter().position(|&b| b == b'\n') {
            len += nl;
            break;
        }
        len += n;
    }
    // Shrinks the length only: the capacity, tail included, is wiped on drop.
    buf.truncate(len);
    Ok(buf)
}

/// The password in the first line of file `f` (a trailing `\r` dropped).
pub fn read_password_file(f: &std::path::Path) -> Result<Zeroizing<Vec<u8>>> {
    let mut file =
        std::fs::File::open(f).map_err(|e| Error::Invalid(format!("reading password file {}: {e}", f.display())))?;
    let mut p = read_first_line(&mut file, &format!("password file {}", f.display()))?;
    while p.last() == Some(&b'\r') {
        p.pop();
    }
    if p.is_empty() {
        return Err(Error::Invalid(format!("password file {} is empty", f.display())));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_line(input: &[u8]) -> Result<Vec<u8>> {
        read_first_line(&mut &input[..], "test input").map(|p| p.to_vec())
    }

    #[test]
    fn first_line_is_the_bytes_before_the_newline() {
        assert_eq!(first_line(b"pw\nmore\n").unwrap(), b"pw");
        assert_eq!(first_line(b"\xff\xfepw").unwrap(), b"\xff\xfepw");
        assert_eq!(first_line(b"pw\r\n").unwrap(), b"pw\r");
        assert_eq!(first_line(b"").unwrap(), b"");
    }

    #[test]
    fn first_line_longer_than_the_limit_is_refused() {
        let mut long = vec![b'a'; MAX_PASSWORD_LINE];
        assert_eq!(first_line(&long).unwrap().len(), MAX_PASSWORD_LINE);
        long.push(b'\n');
        assert_eq!(first_line(&long).unwrap().len(), MAX_PASSWORD_LINE);
        long.insert(0, b'a');
        let err = first_line(&long).unwrap_err().to_string();
        assert!(err.contains("test input") && err.contains("longer than 64 KiB"), "{err}");
    }
}
