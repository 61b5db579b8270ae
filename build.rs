//! The hardware-in-the-loop tests (`tests/hil/hil.rs`) are built for one
//! device: the emulated arm on a pseudo-terminal (default), or the real arm
//! whose port `DIFFBC_HIL_PORT` names when the tests are built. For a real
//! port the emulator-only tests (fault injection, unplugging, what the
//! emulated arm received) are not compiled at all — a real-port run does not
//! run them rather than report them as passed — and this script says so.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(hil_real_port)");
    println!("cargo::rerun-if-env-changed=DIFFBC_HIL_PORT");
    println!("cargo::rerun-if-changed=build.rs");
    if let Some(port) = std::env::var_os("DIFFBC_HIL_PORT") {
        let port = port.to_string_lossy();
        println!("cargo::rustc-cfg=hil_real_port");
        println!("cargo::rustc-env=DIFFBC_HIL_PORT_AT_BUILD={port}");
        println!(
            "cargo::warning=DIFFBC_HIL_PORT={port}: the HIL tests are built for that arm; the emulator-only tests (hil::emulated) are not built and not run (hil::a_real_port_run_names_the_tests_it_does_not_run lists them)"
        );
    }
}
