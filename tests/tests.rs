//! platter's integration tests: one binary, one module per concern, each
//! test driving the real `platter` executable against real files, loop
//! devices and filesystems. Shared helpers (a temporary sandbox, running the
//! binary, images with a byte-exact model, readers for the on-disk format,
//! loop devices) live in `it/common.rs`.

mod it {
    pub mod common;

    mod bad_input;
    mod boot;
    mod boot_instant;
    mod change_qemu;
    mod change_sources;
    mod copies;
    mod crash;
    mod damage;
    mod deltas;
    mod devices;
    mod encryption;
    mod faults;
    mod filesystems;
    mod format;
    mod generated;
    mod hardening_cli_engine;
    mod hardening_content;
    mod hardening_forget;
    mod hardening_init;
    mod hardening_output;
    mod hardening_repofiles;
    mod hardening_signals;
    mod hardening_source;
    mod hardening_target;
    mod incremental;
    mod jobs;
    mod layout;
    mod locks;
    mod mount;
    mod output;
    mod rescue;
    mod retention;
    mod roundtrip;
    mod s3;
    mod scale;
    mod scale_prune;
    mod selection;
}
