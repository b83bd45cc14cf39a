//! End-to-end tests of vault live in `tests/`; this crate only builds the
//! binary they drive.
