//! The `vault` binary: everything lives in the `vault_cli` library so that
//! the end-to-end tests run exactly this `main`.
fn main() -> std::process::ExitCode {
    vault_cli::main()
}
