//! What servo reads at start-up (flags, environment, the tenants file, token
//! files, an Ochothon pod's environment) and the one error of all of them,
//! for `config` and the modules below it that read their own part
//! (`tenants`, `ochopod`). A leaf: nothing of servo below it.

use std::path::{Path, PathBuf};

/// A setting servo cannot use; the message names the flag, variable or file
/// (and in a tenants file the tenant and field) to fix.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Invalid(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads a token file; the trailing newline is not part of the token.
pub fn read_token_file(path: &Path) -> Result<String, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Io {
        what: "cannot read the token file",
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim_end_matches(['\n', '\r']).to_string();
    if token.is_empty() {
        return Err(SettingsError::Invalid(format!(
            "the token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}
