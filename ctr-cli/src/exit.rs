//! How a command ends with an exit code of its own (a container's, or Docker's 125 / 126 /
//! 127) instead of the CLI's usual 1: `main` turns an [`Exit`] error into that code.

/// An error that ends the CLI with a given exit code; `message` (when not empty) is
/// printed first.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn code(code: u32) -> anyhow::Error {
        anyhow::Error::new(Exit {
            code: u8::try_from(code).unwrap_or(255),
            message: String::new(),
        })
    }

    pub fn with(code: u8, message: impl std::fmt::Display) -> anyhow::Error {
        anyhow::Error::new(Exit {
            code,
            message: message.to_string(),
        })
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            write!(f, "exit status {}", self.code)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl std::error::Error for Exit {}

/// `Ok` for 0, else an exit with the code and no message of ours (the exit status of a
/// process berth waited for: ctr's `cli.NewExitError("", code)`).
pub fn exit_with(code: u32) -> anyhow::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Exit::code(code))
    }
}
