//! `sparkle model path|show|reset`: the juggler's learned model file.

use std::process::ExitCode;

use crate::Failure;
use sparkle_std::juggler::store;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Print the model file's path.
    Path,
    /// Summarise the learned model.
    Show,
    /// Delete the learned model (the juggler starts again from its priors).
    Reset,
}

pub fn run(cmd: ModelCommand) -> Result<ExitCode, Failure> {
    let path = store::default_path().ok_or("no cache directory on this system; set SPARKLE_CACHE_DIR")?;
    match cmd {
        ModelCommand::Path => println!("{}", path.display()),
        ModelCommand::Show => match store::describe(&path) {
            Ok(text) => print!("{}\n{text}", path.display()),
            Err(_) if !path.exists() => println!("{}: no model yet (run `sparkle demo`)", path.display()),
            Err(why) => return Err(format!("{}: {why}", path.display()).into()),
        },
        ModelCommand::Reset => match std::fs::remove_file(&path) {
            Ok(()) => println!("removed {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("{}: no model to remove", path.display()),
            Err(e) => return Err(format!("{}: {e}", path.display()).into()),
        },
    }
    Ok(ExitCode::SUCCESS)
}
