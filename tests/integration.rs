//! One integration-test binary; modules under tests/integration/, helpers under tests/common/.

mod common;

mod integration {
    mod badinput;
    mod check;
    mod crash;
    mod damage;
    mod dedup;
    mod diff;
    mod encryption;
    mod fulldisk;
    mod history;
    mod lifecycle;
    mod lookup;
    mod man;
    mod mount;
    mod output;
    mod repair;
    mod restore;
    mod roundtrip;
    mod stale;
}
