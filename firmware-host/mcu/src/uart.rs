//! UART0 of the LM3S6965 (an ARM PL011 with Luminary's identification), at
//! 0x4000_C000: the one module with raw register access. A port to another
//! board replaces this file with its own [`Serial`] implementation.

#![allow(unsafe_code)]

use diffbc_firmware::Serial;

const BASE: usize = 0x4000_C000;
const DR: usize = 0x000;
const FR: usize = 0x018;
const IBRD: usize = 0x024;
const FBRD: usize = 0x028;
const LCRH: usize = 0x02C;
const CR: usize = 0x030;
const IM: usize = 0x038;
const ICR: usize = 0x044;

const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
const LCRH_FEN: u32 = 1 << 4;
const LCRH_WLEN_8: u32 = 0b11 << 5;
const CR_UARTEN: u32 = 1 << 0;
const CR_TXE: u32 = 1 << 8;
const CR_RXE: u32 = 1 << 9;
/// Receive and receive-timeout interrupts.
const IM_RX: u32 = (1 << 4) | (1 << 6);

/// UART0's interrupt number on the LM3S6965.
pub const IRQ: i16 = 5;

fn read(offset: usize) -> u32 {
    // SAFETY: an aligned MMIO register of UART0, which exists on this chip.
    unsafe { core::ptr::read_volatile((BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { core::ptr::write_volatile((BASE + offset) as *mut u32, value) }
}

/// UART0, 115200 8N1 with FIFOs (QEMU ignores the baud rate).
#[derive(Debug)]
pub struct Uart0 {
    _private: (),
}

impl Uart0 {
    /// Configure UART0. Call once.
    pub fn init(sysclk_hz: u32) -> Self {
        write(CR, 0);
        // Baud divisor = sysclk / (16 * 115200), integer and 1/64 parts.
        let div64 = (sysclk_hz * 4) / 115_200;
        write(IBRD, div64 / 64);
        write(FBRD, div64 % 64);
        write(LCRH, LCRH_WLEN_8 | LCRH_FEN);
        write(ICR, 0x7FF);
        write(CR, CR_UARTEN | CR_TXE | CR_RXE);
        Self { _private: () }
    }

    /// UART0 again, for the fatal path only (panic, hard fault): it was
    /// configured at boot and the main loop that owns it never runs again.
    pub fn for_fatal_path() -> Self {
        Self { _private: () }
    }

    /// Whether a received byte waits in the FIFO.
    pub fn rx_ready() -> bool {
        read(FR) & FR_RXFE == 0
    }

    /// Let a received byte raise UART0's interrupt (to wake the core).
    pub fn listen() {
        write(IM, IM_RX);
    }

    /// Mask the receive interrupt (from the handler: the main loop drains
    /// the FIFO, then listens again).
    pub fn unlisten() {
        write(IM, 0);
    }
}

impl Serial for Uart0 {
    fn read(&mut self) -> Option<u8> {
        Self::rx_ready().then(|| (read(DR) & 0xFF) as u8)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            while read(FR) & FR_TXFF != 0 {}
            write(DR, u32::from(b));
        }
    }
}

/// UART0's interrupt line, for the NVIC.
#[derive(Debug, Clone, Copy)]
struct Uart0Irq;

// SAFETY: 5 is UART0's interrupt number on the LM3S6965.
unsafe impl cortex_m::interrupt::InterruptNumber for Uart0Irq {
    fn number(self) -> u16 {
        IRQ as u16
    }
}

/// Let UART0's interrupt reach the core (it only wakes it: the handler masks
/// it and the main loop reads the bytes).
pub fn unmask_irq() {
    // SAFETY: the handler (`DefaultHandler` in main.rs) touches nothing the
    // main loop holds: it only masks the UART's own interrupt.
    unsafe { cortex_m::peripheral::NVIC::unmask(Uart0Irq) }
}
