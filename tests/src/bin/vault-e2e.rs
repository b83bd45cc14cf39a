//! The `vault` CLI, built within the test package for the end-to-end tests.
fn main() -> std::process::ExitCode {
    vault_cli::main()
}
