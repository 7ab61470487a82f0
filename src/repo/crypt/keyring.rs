//! The Linux kernel key retention service (keyrings(7)), as much of it as the key cache needs:
//! `user` keys in the user keyring (`@u`), found by description, read, put with a timeout,
//! invalidated. Raw `add_key(2)` and `keyctl(2)` system calls through `libc::syscall`, so that
//! nothing links libkeyutils; every `unsafe` block is one system call with buffers this module
//! owns.
//!
//! **Why the user keyring.** It is shared by every process of the user (a shell, the next shell,
//! cron), which is what a cache between commands needs; session keyrings differ between login
//! sessions and systemd services. A key there is *possessed* only by processes whose session
//! keyring links `@u` (a login session through pam_keyinit does), so [`put`] also grants the
//! owning user (not group, not others) view, read and search: a strata run from a service with a
//! private session keyring finds it too. Key payloads live in kernel memory, which is never
//! swapped out nor written to disk.
//!
//! **No key without its timeout.** A key is made in this thread's keyring, given its permissions
//! and timeout there, and only then linked into `@u` (displacing an older key of the same
//! description atomically) and unlinked from the thread keyring: a process killed half way leaves
//! nothing behind, since the thread keyring goes with the thread.

use std::ffi::CString;
use std::io;

use zeroize::Zeroizing;

/// A key's serial number.
pub type Serial = i32;

const KEY_SPEC_THREAD_KEYRING: i32 = -1;
const KEY_SPEC_USER_KEYRING: i32 = -4;
const KEYCTL_UPDATE: libc::c_long = 2;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_LINK: libc::c_long = 8;
const KEYCTL_UNLINK: libc::c_long = 9;
const KEYCTL_SEARCH: libc::c_long = 10;
const KEYCTL_READ: libc::c_long = 11;
const KEYCTL_SET_TIMEOUT: libc::c_long = 15;
const KEYCTL_INVALIDATE: libc::c_long = 21;

/// Permissions of a cached key: everything for its possessor; view, read and search for the user
/// who owns it (`KEY_POS_ALL | KEY_USR_VIEW | KEY_USR_READ | KEY_USR_SEARCH`); nothing for the
/// group or others.
const PERMISSIONS: libc::c_long = 0x3f0b_0000;

/// The largest payload [`read`] returns.
pub const MAX_PAYLOAD: usize = 256;

const KEY_TYPE: &str = "user";

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The result of a system call returning a number, or the error `errno` holds.
fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn keyctl(op: libc::c_long, a: libc::c_long, b: libc::c_long) -> io::Result<libc::c_long> {
    // SAFETY: the operations passed here take integers only (serials, permissions, seconds).
    check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            op,
            a,
            b,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    })
}

/// The user key `description` in the user keyring, if there is one this process may search
/// (an expired or invalidated key is none).
pub fn find(description: &str) -> io::Result<Option<Serial>> {
    let ty = cstring(KEY_TYPE)?;
    let desc = cstring(description)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the destination keyring 0
    // means "link the key found nowhere".
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_SEARCH,
            KEY_SPEC_USER_KEYRING as libc::c_long,
            ty.as_ptr(),
            desc.as_ptr(),
            0 as libc::c_long,
        )
    };
    match check(r) {
        Ok(serial) => Ok(Some(serial as Serial)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOKEY | libc::EKEYEXPIRED | libc::EKEYREVOKED)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The payload of key `serial` (at most [`MAX_PAYLOAD`] bytes; a longer one is an error).
pub fn read(serial: Serial) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_PAYLOAD]);
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_READ,
            serial as libc::c_long,
            buf.as_mut_ptr(),
            buf.len() as libc::c_long,
            0 as libc::c_long,
        )
    };
    let n = check(r)? as usize;
    if n > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a key payload of {n} bytes"),
        ));
    }
    buf.truncate(n);
    Ok(buf)
}

/// Puts the user key `description` with `payload` into the user keyring, expiring after
/// `timeout_s` seconds (at least 1), in place of any key of that description (see the module
/// documentation for the order of the steps).
pub fn put(description: &str, payload: &[u8], timeout_s: u32) -> io::Result<Serial> {
    let ty = cstring(KEY_TYPE)?;
    let desc = cstring(description)?;
    // SAFETY: the strings are NUL-terminated, `payload` is valid for its length; all outlive the
    // call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len() as libc::size_t,
            KEY_SPEC_THREAD_KEYRING as libc::c_long,
        )
    };
    let serial = check(r)? as Serial;
    let placed = keyctl(KEYCTL_SETPERM, serial.into(), PERMISSIONS)
        .and_then(|_| keyctl(KEYCTL_SET_TIMEOUT, serial.into(), timeout_s.max(1).into()))
        .and_then(|_| keyctl(KEYCTL_LINK, serial.into(), KEY_SPEC_USER_KEYRING.into()));
    let unlinked = keyctl(KEYCTL_UNLINK, serial.into(), KEY_SPEC_THREAD_KEYRING.into());
    if let Err(e) = placed {
        let _ = invalidate(serial);
        return Err(e);
    }
    unlinked?;
    Ok(serial)
}

/// Replaces the payload of key `serial` (the caller needs write permission: its possessor).
pub fn update(serial: Serial, payload: &[u8]) -> io::Result<()> {
    // SAFETY: `payload` is valid for its length and outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_UPDATE,
            serial as libc::c_long,
            payload.as_ptr(),
            payload.len() as libc::size_t,
            0 as libc::c_long,
        )
    };
    check(r).map(|_| ())
}

/// Invalidates key `serial`: it is gone from every keyring at once, its payload freed.
pub fn invalidate(serial: Serial) -> io::Result<()> {
    keyctl(KEYCTL_INVALIDATE, serial.into(), 0).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kernels or sandboxes without keyrings (a container whose seccomp profile refuses
    /// `add_key`) cannot run these; the cache then stays off with a warning.
    fn available() -> bool {
        match find("strata:test:probe") {
            Ok(_) => true,
            Err(e) => {
                eprintln!("no kernel keyring here ({e}); skipped");
                false
            }
        }
    }

    /// A description no other test run uses.
    fn test_description() -> String {
        let tag: String = super::super::random::<8>()
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("strata:test:{tag}")
    }

    #[test]
    fn a_key_is_put_found_read_replaced_and_invalidated() {
        if !available() {
            return;
        }
        let desc = test_description();
        assert_eq!(find(&desc).unwrap(), None);
        let first = put(&desc, b"first", 60).unwrap();
        assert_eq!(find(&desc).unwrap(), Some(first));
        assert_eq!(&read(first).unwrap()[..], b"first");
        let second = put(&desc, b"second", 60).unwrap();
        assert_eq!(find(&desc).unwrap(), Some(second));
        assert_eq!(&read(second).unwrap()[..], b"second");
        update(second, b"third").unwrap();
        assert_eq!(&read(second).unwrap()[..], b"third");
        invalidate(second).unwrap();
        assert_eq!(find(&desc).unwrap(), None);
        let _ = invalidate(first);
    }

    #[test]
    fn a_key_expires() {
        if !available() {
            return;
        }
        let desc = test_description();
        put(&desc, b"short", 1).unwrap();
        assert!(find(&desc).unwrap().is_some());
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(find(&desc).unwrap(), None);
    }
}
