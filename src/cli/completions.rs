//! `strata completions SHELL`: a completion script generated from the clap definitions
//! (`clap_complete`), so it knows every command and option this binary has.

use clap::Args;
use clap_complete::Shell;

use super::{command, EXIT_OK};
use crate::Result;

/// `strata completions`
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the script to standard output.
pub fn run(a: CompletionsArgs) -> Result<i32> {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut command(), "strata", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    Ok(EXIT_OK)
}
