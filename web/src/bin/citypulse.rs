//! `citypulse`: terminal tools (coming next).

fn main() {}
