//! The arm firmware on a microcontroller: QEMU's `lm3s6965evb` (TI LM3S6965,
//! Cortex-M3). The device side of diffbc's wire protocol — handshake,
//! commands, watchdog, stop, faults, telemetry at a fixed rate — is
//! `diffbc_firmware::Device` (the state machine the host emulator runs too)
//! over two seams: [`uart::Uart0`] (`diffbc_firmware::Serial`) and
//! simulated servos (`diffbc_firmware::Motors`). SysTick keeps time.
//!
//! `cargo build --release` here (target thumbv7m-none-eabi, see
//! `.cargo/config.toml`); `firmware-host/README.md` says how to run it.

#![no_std]
#![no_main]

mod uart;

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::time::Duration;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use diffbc_firmware::{Serial, reference};
use uart::Uart0;

/// Core clock after reset: QEMU's LM3S6965 runs its 200 MHz PLL / 16.
const SYSCLK_HZ: u32 = 12_500_000;
/// SysTick rate (the device clock's resolution).
const TICK_HZ: u32 = 1000;
/// `--features panic-probe`: the test build panics this long after boot,
/// so a test can watch the fatal path (fault frame, drives cut, halt).
#[cfg(feature = "panic-probe")]
const PANIC_PROBE_AFTER_MS: u64 = 3000;

/// Milliseconds since power-on (SysTick), wrapping after 49 days; the main
/// loop widens it to 64 bits.
static TICKS: AtomicU32 = AtomicU32::new(0);

#[entry]
fn main() -> ! {
    let Some(mut core) = cortex_m::Peripherals::take() else {
        stop_forever()
    };
    let mut serial = Uart0::init(SYSCLK_HZ);

    // The reference arm (diffbc_firmware::reference: the host emulator's
    // default arm) on simulated servos.
    let mut device = reference::device(reference::sim_servos());

    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(SYSCLK_HZ / TICK_HZ - 1);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();
    uart::unmask_irq();

    let mut seen = TICKS.load(Ordering::Relaxed);
    let mut ms: u64 = u64::from(seen);
    loop {
        let t = TICKS.load(Ordering::Relaxed);
        ms += u64::from(t.wrapping_sub(seen));
        seen = t;
        device.poll(&mut serial, Duration::from_millis(ms));
        #[cfg(feature = "panic-probe")]
        if ms >= PANIC_PROBE_AFTER_MS {
            // The test build's deliberate panic (`--features panic-probe`).
            panic!("panic-probe");
        }
        // Sleep until the next tick or byte. Interrupts are masked between
        // the check and WFI, so a byte arriving in between still wakes it.
        cortex_m::interrupt::free(|_| {
            Uart0::listen();
            if !Uart0::rx_ready() && TICKS.load(Ordering::Relaxed) == seen {
                cortex_m::asm::wfi();
            }
        });
    }
}

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// Device interrupts: UART0's receive interrupt only wakes the main loop.
#[allow(unsafe_code)]
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == uart::IRQ {
        Uart0::unlisten();
    }
}

#[allow(unsafe_code)]
#[exception]
unsafe fn HardFault(_frame: &cortex_m_rt::ExceptionFrame) -> ! {
    fatal(0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // The source line goes in the fault frame (what a user can report
    // without a debugger); keeping panic locations costs about 14 KiB of
    // flash over a handler that ignores them.
    fatal(info.location().map_or(0, |l| l.line()))
}

/// Set by the first fatal error: a panic while reporting one only halts.
static FATAL: AtomicBool = AtomicBool::new(false);

/// A panic or hard fault: interrupts off, the drives cut, a
/// `FaultCode::Firmware` frame (`detail`: the panic's source line) written
/// with UART0's blocking write, then the core asleep for good. The host
/// stops its loop on the fault frame (or on the silence after it).
fn fatal(detail: u32) -> ! {
    cortex_m::interrupt::disable();
    if !FATAL.swap(true, Ordering::Relaxed) {
        cut_drives();
        let mut buf = [0u8; diffbc_protocol::MAX_FRAME];
        let bytes = diffbc_firmware::fatal_fault_frame(detail, &mut buf);
        Uart0::for_fatal_path().write(bytes);
    }
    stop_forever()
}

/// Cut the motors' power stage from the fatal path, without the `Motors`
/// value (it lives in the main loop, which never runs again). The simulated
/// servos have no power stage: they stay where they are because nothing
/// drives them any more. A board writes its PWM outputs to idle or pulls its
/// driver's enable pin low here, with raw register writes.
fn cut_drives() {}

/// Never returns: interrupts off, the core asleep.
fn stop_forever() -> ! {
    cortex_m::interrupt::disable();
    loop {
        cortex_m::asm::wfi();
    }
}
