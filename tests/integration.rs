//! One integration-test binary; modules under tests/integration/, helpers under tests/common/.

mod common;

mod integration {
    mod anomaly;
    mod badinput;
    mod check;
    mod completions;
    mod config;
    mod copy;
    mod crash;
    mod damage;
    mod dedup;
    mod diff;
    mod encryption;
    mod fulldisk;
    mod history;
    mod hooks;
    mod lifecycle;
    mod listing;
    mod live;
    mod lookup;
    mod man;
    mod monitoring;
    mod mount;
    mod output;
    mod owner;
    mod postgres;
    mod progress;
    mod repair;
    mod restore;
    mod roundtrip;
    mod s3;
    mod sqlite;
    mod stale;
    mod streams;
    mod walkthrough;
}
