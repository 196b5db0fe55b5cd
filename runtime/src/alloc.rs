//! The memory allocator of every service binary: jemalloc (through `tikv-jemallocator`).
//!
//! Each `main.rs` installs it with
//! `#[global_allocator] static ALLOC: citypulse_runtime::alloc::Allocator = citypulse_runtime::alloc::ALLOCATOR;`.
//!
//! Why not the system allocator: glibc's malloc keeps freed memory in per-thread arenas and gives
//! little of it back, so a service's resident memory rises to the high-water mark of its busiest
//! moment — the archive's catch-up after a PostgreSQL outage, a burst of large READINGS batches —
//! and stays there. An operator cannot tell that from a leak, and `scripts/soak` (which judges RSS
//! growth) could not either. jemalloc returns unused pages to the operating system after a decay
//! time, so resident memory follows what the service actually holds, and its base footprint stays
//! close to glibc's (mimalloc, also measured, returned memory as well but started every service
//! 10–25 MiB higher).
//!
//! The workspace's `.cargo/config.toml` compiles options into jemalloc
//! (`JEMALLOC_SYS_WITH_MALLOC_CONF`): freed pages go back after 100 ms (`dirty_decay_ms`), with
//! `MADV_DONTNEED`, which lowers RSS at once (`muzzy_decay_ms:0` skips `MADV_FREE`, whose pages
//! stay counted until the kernel needs them), from a background thread, so a service that goes
//! quiet gives its memory back too. The `_RJEM_MALLOC_CONF` environment variable (jemalloc's
//! `MALLOC_CONF` under this build's symbol prefix) overrides them at run time.
//!
//! Measured with `scripts/soak --pg-outage-minutes`; the figures are in docs/benchmarks.md
//! ("Memory across a PostgreSQL outage: the allocator"). The decay was 1 s until
//! `scripts/bench` at 100,000 sensors showed a service's peak RSS carrying up to a second of
//! freed pages (the processors 20–30 MiB, replay 27 MiB); 100 ms cost no measurable CPU, 0 ms
//! about a quarter more of the processors' (docs/benchmarks.md, "The allocator's decay").
//! Tests and benches keep the system allocator; only the binaries install this one.

/// The allocator type a service's `#[global_allocator]` static has.
pub type Allocator = tikv_jemallocator::Jemalloc;

/// The value of that static.
pub const ALLOCATOR: Allocator = tikv_jemallocator::Jemalloc;
