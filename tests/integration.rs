//! One integration-test binary; modules under tests/integration/, helpers under tests/common/.

mod common;

mod integration {
    mod badinput;
    mod crash;
    mod damage;
    mod dedup;
    mod man;
    mod mount;
    mod restore;
    mod roundtrip;
}
