//! The hardware-in-the-loop tests (`tests/hil/`) are built for the devices
//! named when they are built:
//!
//! - nothing set: the emulated arm, the firmware in QEMU and emulated
//!   servo buses;
//! - `DIFFBC_HIL_PORT` alone: that port is an arm speaking diffbc's
//!   protocol. The emulator-only tests (fault injection, unplugging, what
//!   the emulated arm received) are not compiled at all — a real-port run
//!   does not run them rather than report them as passed — and this script
//!   says so;
//! - `DIFFBC_HIL_PORT` with `DIFFBC_HIL_ARM` (a servo-arm preset, e.g.
//!   `so101-follower`) and `DIFFBC_HIL_CALIBRATION` (its calibration file):
//!   that port is a servo bus; `servo::real_arm` drives it gently and reads
//!   torque back off after each way out. The protocol tests keep their
//!   emulated devices.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(hil_real_port)");
    println!("cargo::rustc-check-cfg=cfg(hil_real_arm)");
    for var in [
        "DIFFBC_HIL_PORT",
        "DIFFBC_HIL_ARM",
        "DIFFBC_HIL_CALIBRATION",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=build.rs");
    let Some(port) = std::env::var_os("DIFFBC_HIL_PORT") else {
        return;
    };
    let port = port.to_string_lossy();
    println!("cargo::rustc-env=DIFFBC_HIL_PORT_AT_BUILD={port}");
    if let Some(arm) = std::env::var_os("DIFFBC_HIL_ARM") {
        let arm = arm.to_string_lossy();
        let cal = std::env::var("DIFFBC_HIL_CALIBRATION").unwrap_or_default();
        println!("cargo::rustc-cfg=hil_real_arm");
        println!("cargo::rustc-env=DIFFBC_HIL_ARM_AT_BUILD={arm}");
        println!("cargo::rustc-env=DIFFBC_HIL_CALIBRATION_AT_BUILD={cal}");
        println!(
            "cargo::warning=DIFFBC_HIL_ARM={arm} on DIFFBC_HIL_PORT={port}: servo::real_arm drives that arm (calibration {cal:?}); the protocol HIL tests keep their emulated devices"
        );
        return;
    }
    println!("cargo::rustc-cfg=hil_real_port");
    println!(
        "cargo::warning=DIFFBC_HIL_PORT={port}: the HIL tests are built for that arm; the emulator-only tests (hil::emulated) are not built and not run (hil::a_real_port_run_names_the_tests_it_does_not_run lists them)"
    );
}
