//! `glow-run defs`: Rhai definition files for editors.

use crate::error::{EXIT_OK, Error};
use std::path::Path;

/// `glow-run defs [--out DIR]`: Rhai definition files for editors (see `definitions.rs`).
/// With `--out`, one file per namespace plus Rhai's own built-ins, ready for a language server;
/// without, the glow-run API as one text on stdout.
pub fn defs(out: Option<&Path>) -> Result<i32, Error> {
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::host(format!("creating {}", dir.display()), e))?;
            let files = crate::definitions::generate(true)?;
            for file in &files {
                let path = dir.join(&file.name);
                std::fs::write(&path, &file.text)
                    .map_err(|e| Error::host(format!("writing {}", path.display()), e))?;
            }
            eprintln!(
                "defs: wrote {} definition file(s) to {}",
                files.len(),
                dir.display()
            );
        }
        None => {
            let text = crate::definitions::single_file()?;
            let mut stdout = std::io::stdout().lock();
            let _ = std::io::Write::write_all(&mut stdout, text.as_bytes());
        }
    }
    Ok(EXIT_OK)
}
