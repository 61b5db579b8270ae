//! The arm firmware on a real board: an ST Nucleo-F411RE (STM32F411RE,
//! Cortex-M4F, 512 KiB flash, 128 KiB RAM). The device side of diffbc's
//! wire protocol — handshake, commands, watchdog, stop, faults, telemetry
//! at a fixed rate — is `diffbc_firmware::Device` (the state machine the
//! host emulator and the QEMU firmware run too) over two seams:
//! [`serial::Usart2`] (`diffbc_firmware::Serial`, the ST-LINK's virtual COM
//! port) and [`servos::HobbyServos`] (`diffbc_firmware::Motors`, four hobby
//! servos on TIM3's PWM). SysTick keeps time. Peripherals through
//! `stm32f4xx-hal`; the fatal path alone uses raw registers.
//!
//! `cargo build --release` here (target thumbv7em-none-eabihf, see
//! `.cargo/config.toml`); `README.md` beside it says how to wire and flash.

#![no_std]
#![no_main]

mod serial;
mod servos;

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::time::Duration;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use diffbc_firmware::reference;
use serial::Usart2;
use servos::HobbyServos;
use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Config;

/// Core clock: the 16 MHz HSI through the PLL. The F411's maximum (100 MHz)
/// puts APB1 (USART2, TIM3's bus) at 50 MHz, from which 1 Mbaud is exact.
/// The HSI is used so the same image runs whether or not the Nucleo's
/// ST-LINK feeds its 8 MHz MCO to the HSE input (solder bridges).
const SYSCLK_HZ: u32 = 100_000_000;
/// SysTick rate (the device clock's resolution).
const TICK_HZ: u32 = 1000;

/// Milliseconds since power-on (SysTick), wrapping after 49 days; the main
/// loop widens it to 64 bits.
static TICKS: AtomicU32 = AtomicU32::new(0);

#[entry]
fn main() -> ! {
    let (Some(mut core), Some(dp)) = (cortex_m::Peripherals::take(), pac::Peripherals::take())
    else {
        stop_forever()
    };
    let mut rcc = dp.RCC.freeze(Config::hsi().sysclk(SYSCLK_HZ.Hz()));
    let gpioa = dp.GPIOA.split(&mut rcc);
    let gpiob = dp.GPIOB.split(&mut rcc);

    let Some(mut serial) = Usart2::init(dp.USART2, gpioa.pa2, gpioa.pa3, &mut rcc) else {
        stop_forever()
    };

    // The reference arm (diffbc_firmware::reference: what the handshake
    // reports) on four hobby servos, limp until the first command.
    let servos = HobbyServos::new(
        dp.TIM3,
        (gpioa.pa6, gpioa.pa7, gpiob.pb0, gpiob.pb1),
        [reference::LIMIT; reference::JOINTS],
        [0.0; reference::JOINTS],
        &mut rcc,
    );
    let mut device = reference::device(servos);

    let sysclk = rcc.clocks.sysclk().raw();
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(sysclk / TICK_HZ - 1);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();
    Usart2::unmask_irq();

    let mut seen = TICKS.load(Ordering::Relaxed);
    let mut ms: u64 = u64::from(seen);
    loop {
        let t = TICKS.load(Ordering::Relaxed);
        ms += u64::from(t.wrapping_sub(seen));
        seen = t;
        device.poll(&mut serial, Duration::from_millis(ms));
        // Pulses resume once the firmware follows commands again (the first
        // command after power-on, or after a fault and a new handshake).
        if device.firmware.enabled() && device.motors.is_limp() {
            device.motors.engage();
        }
        // Sleep until the next tick or byte. Interrupts are masked between
        // the check and WFI, so a byte or tick arriving in between still
        // wakes it (a pending interrupt ends WFI even while masked).
        cortex_m::interrupt::free(|_| {
            if !Usart2::rx_ready() && TICKS.load(Ordering::Relaxed) == seen {
                cortex_m::asm::wfi();
            }
        });
    }
}

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

#[allow(unsafe_code)]
#[exception]
unsafe fn HardFault(_frame: &cortex_m_rt::ExceptionFrame) -> ! {
    fatal(0)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // The source line goes in the fault frame (what a user can report
    // without a debugger).
    fatal(info.location().map_or(0, |l| l.line()))
}

/// Set by the first fatal error: a panic while reporting one only halts.
static FATAL: AtomicBool = AtomicBool::new(false);

/// A panic or hard fault: interrupts off, the servo pulses cut (raw TIM3
/// writes), a `FaultCode::Firmware` frame (`detail`: the panic's source
/// line) written to USART2 with raw blocking register writes, then the core
/// asleep for good. The host stops its loop on the fault frame (or on the
/// silence after it).
fn fatal(detail: u32) -> ! {
    cortex_m::interrupt::disable();
    if !FATAL.swap(true, Ordering::Relaxed) {
        servos::cut_from_fatal_path();
        let mut buf = [0u8; diffbc_protocol::MAX_FRAME];
        let bytes = diffbc_firmware::fatal_fault_frame(detail, &mut buf);
        serial::write_from_fatal_path(bytes);
    }
    stop_forever()
}

/// Never returns: interrupts off, the core asleep.
fn stop_forever() -> ! {
    cortex_m::interrupt::disable();
    loop {
        cortex_m::asm::wfi();
    }
}
