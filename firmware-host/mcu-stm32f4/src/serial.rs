//! USART2 of the STM32F411 (PA2 TX, PA3 RX: on a Nucleo-F411RE, the
//! ST-LINK's virtual COM port), 1 Mbaud 8N1, through `stm32f4xx-hal`: the
//! board's [`Serial`].
//!
//! Reception is interrupt-driven. The F4's USART holds one received byte
//! (no FIFO) and at 1 Mbaud a byte arrives every 10 µs, while one telemetry
//! frame takes the main loop about 1 ms to write (blocking): polled, the
//! receiver would overrun on every command that arrived during a write. So
//! the USART2 interrupt moves each byte from the HAL's `Rx` into [`RX_RING`]
//! and [`Serial::read`] takes it from there. Transmission is the HAL's
//! blocking byte write.

use core::cell::RefCell;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use cortex_m::interrupt::Mutex;
use diffbc_firmware::Serial;
use stm32f4xx_hal::gpio::{PA2, PA3};
use stm32f4xx_hal::nb;
use stm32f4xx_hal::pac::{self, USART2, interrupt};
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Rcc;
use stm32f4xx_hal::serial::{self, Rx, Tx};

/// The link's rate: the host's default (`diffbc run --baud`). USART2 runs
/// from APB1 (50 MHz here): 50 MHz / (16 × 1 Mbaud) = 3.125, exactly
/// representable in the baud-rate register (0 % error).
pub const BAUD: u32 = 1_000_000;

/// Received bytes not read yet: a single-producer (the USART2 interrupt),
/// single-consumer (the main loop) ring of atomics. 1 KiB holds 10 ms of
/// line time at 1 Mbaud, ten times the longest stretch the main loop spends
/// away from it (one telemetry write).
static RX_RING: Ring = Ring::new();

/// Receive errors (overrun, framing, noise, parity) and bytes dropped on a
/// full ring, for a debugger; the protocol's decoder resynchronises on the
/// next good frame and the host sees the bad frame in the link counters.
pub static RX_ERRORS: AtomicU32 = AtomicU32::new(0);

/// The receiver, handed from `Usart2::init` to the interrupt (which keeps
/// it from its first run on).
static RX_HANDOFF: Mutex<RefCell<Option<Rx<USART2>>>> = Mutex::new(RefCell::new(None));

/// USART2 is configured: the fatal path may write to it.
static READY: AtomicBool = AtomicBool::new(false);

const RING_LEN: usize = 1024;

struct Ring {
    buf: [AtomicU8; RING_LEN],
    /// Next slot the producer writes (only the interrupt stores it).
    head: AtomicUsize,
    /// Next slot the consumer reads (only the main loop stores it).
    tail: AtomicUsize,
}

impl Ring {
    const fn new() -> Self {
        Self {
            buf: [const { AtomicU8::new(0) }; RING_LEN],
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
        }
    }

    /// From the interrupt only. False when full (the byte is dropped).
    fn push(&self, b: u8) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        let next = (head + 1) % RING_LEN;
        if next == self.tail.load(Ordering::Acquire) {
            return false;
        }
        self.buf[head].store(b, Ordering::Relaxed);
        self.head.store(next, Ordering::Release);
        true
    }

    /// From the main loop only.
    fn pop(&self) -> Option<u8> {
        let tail = self.tail.load(Ordering::Relaxed);
        if tail == self.head.load(Ordering::Acquire) {
            return None;
        }
        let b = self.buf[tail].load(Ordering::Relaxed);
        self.tail.store((tail + 1) % RING_LEN, Ordering::Release);
        Some(b)
    }

    fn is_empty(&self) -> bool {
        self.tail.load(Ordering::Relaxed) == self.head.load(Ordering::Acquire)
    }
}

/// USART2 as the firmware's byte link.
pub struct Usart2 {
    tx: Tx<USART2>,
}

impl Usart2 {
    /// Configure USART2 at [`BAUD`] on PA2/PA3 and hand the receiver to its
    /// interrupt (unmasked by [`Usart2::unmask_irq`]). `None` if the clocks
    /// cannot make the baud rate.
    pub fn init(usart: USART2, tx: PA2, rx: PA3, rcc: &mut Rcc) -> Option<Self> {
        let config = serial::Config::default().baudrate(BAUD.bps());
        let port = usart.serial::<u8>((tx, rx), config, rcc).ok()?;
        let (tx, mut rx) = port.split();
        // The interrupt stays masked in the NVIC until `unmask_irq`, after
        // the handoff: it never runs without the receiver.
        rx.listen();
        cortex_m::interrupt::free(|cs| RX_HANDOFF.borrow(cs).replace(Some(rx)));
        READY.store(true, Ordering::Release);
        Some(Self { tx })
    }

    /// Let USART2's interrupt reach the core.
    #[allow(unsafe_code)]
    pub fn unmask_irq() {
        // SAFETY: unmasking can break a critical section that relies on
        // this interrupt being masked; none does. The handler touches only
        // the receiver it owns and the ring (atomics).
        unsafe { cortex_m::peripheral::NVIC::unmask(pac::Interrupt::USART2) }
    }

    /// Whether received bytes wait in the ring.
    pub fn rx_ready() -> bool {
        !RX_RING.is_empty()
    }
}

impl Serial for Usart2 {
    fn read(&mut self) -> Option<u8> {
        RX_RING.pop()
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            // The HAL's write only ever reports WouldBlock (the data
            // register is busy): wait for it.
            while self.tx.write(b).is_err() {}
        }
    }
}

/// RXNE (a byte) or ORE (an overrun): move what the USART holds into the
/// ring. The HAL's read clears an error by reading the data register.
#[interrupt]
fn USART2() {
    static mut RX: Option<Rx<USART2>> = None;
    if RX.is_none() {
        *RX = cortex_m::interrupt::free(|cs| RX_HANDOFF.borrow(cs).take());
    }
    let Some(rx) = RX.as_mut() else {
        return;
    };
    loop {
        match rx.read() {
            Ok(b) => {
                if !RX_RING.push(b) {
                    RX_ERRORS.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(nb::Error::WouldBlock) => break,
            Err(nb::Error::Other(_)) => {
                RX_ERRORS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Write `bytes` to USART2 with raw register access, for the fatal path
/// (panic, hard fault) only: interrupts are off and the main loop that owns
/// the HAL's `Tx` never runs again. Does nothing before USART2 is
/// configured; gives up on a byte the USART does not take within about
/// 1 ms (a byte takes 10 µs), so a wedged USART cannot hang the halt.
#[allow(unsafe_code)]
pub fn write_from_fatal_path(bytes: &[u8]) {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: the only other user of USART2 is the main loop's `Tx` (and
    // the interrupt's `Rx`), neither of which runs again: interrupts are
    // disabled and the fatal path never returns. Reading SR and writing DR
    // have no effect on the receiver's state.
    let usart = unsafe { USART2::steal() };
    for &b in bytes {
        let mut spins = 0u32;
        while usart.sr().read().txe().bit_is_clear() && spins < 100_000 {
            spins += 1;
        }
        usart.dr().write(|w| w.dr().set(u16::from(b)));
    }
    // Let the last byte leave the shift register before the core halts.
    let mut spins = 0u32;
    while usart.sr().read().tc().bit_is_clear() && spins < 100_000 {
        spins += 1;
    }
}
