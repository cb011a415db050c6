//! berth's pause: the init process of a pod sandbox, built by berthd's build script as a
//! static binary (no libraries to find in the sandbox's empty root) and written out by
//! berthd. It holds the pod's namespaces open and does nothing else: every signal is
//! blocked and taken with sigwait; SIGINT and SIGTERM end it with status 0, SIGCHLD reaps
//! what ended (it is PID 1 of the pod when the pod shares one PID namespace).
//!
//! Compiled on its own by rustc (not a workspace crate), so it declares the four libc
//! calls it needs itself.

use std::os::raw::c_int;

/// `sigset_t` on Linux: 1024 bits.
#[repr(C)]
struct SigSet([u64; 16]);

unsafe extern "C" {
    fn sigfillset(set: *mut SigSet) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigwait(set: *const SigSet, sig: *mut c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
}

const SIG_BLOCK: c_int = 0;
const WNOHANG: c_int = 1;
const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("berth-pause {}", env!("BERTH_PAUSE_VERSION"));
        return;
    }
    let mut set = SigSet([0; 16]);
    // SAFETY: `set` is a valid sigset_t-sized buffer owned by this frame; the calls only
    // write into it or read it.
    unsafe {
        sigfillset(&mut set);
        sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut());
    }
    loop {
        let mut sig: c_int = 0;
        // SAFETY: both pointers are to live locals.
        if unsafe { sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        match sig {
            SIGINT | SIGTERM => std::process::exit(0),
            SIGCHLD => {
                let mut status: c_int = 0;
                // SAFETY: `status` is a live local.
                while unsafe { waitpid(-1, &mut status, WNOHANG) } > 0 {}
            }
            _ => {}
        }
    }
}
