//! The `strata` binary: parse arguments, set up logging, run the command, map the result to an
//! exit code (0 ok, 1 error, 2 usage, 3 completed with warnings).

fn main() {
    std::process::exit(strata::cli::main());
}
