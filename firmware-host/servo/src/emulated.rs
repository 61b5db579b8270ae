//! Emulated servo buses for the tests: servos behind a pseudo-terminal that
//! answer the real byte protocol of their family ([`ServoDevice`], one per
//! family: [`crate::feetech::FeetechDevice`],
//! [`crate::dynamixel::DynamixelDevice`]), move with simple dynamics, and
//! keep the register state a test asserts (torque, goal, every goal
//! SYNC_WRITE in order). [`BusFaults`] injects what goes wrong on real buses:
//! a corrupt checksum, a missing status packet, an error bit, an unplugged
//! adapter.

use serialport::{SerialPort, TTYPort};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One emulated servo. Positions in ticks; the present position a servo
/// reports is its family's function of `position` and `homing_offset`.
#[derive(Debug, Clone, PartialEq)]
pub struct EmuServo {
    /// Bus id.
    pub id: u8,
    /// Model number (answered to a ping).
    pub model: u16,
    /// Where the horn is (ticks, before any homing offset).
    pub position: f32,
    /// Ticks per second.
    pub velocity: f32,
    /// Torque on: the servo drives toward `goal`; off: it stays where it is
    /// (or where a hand puts it: [`EmuBus::move_by_hand`]).
    pub torque: bool,
    /// Goal position (ticks, as written: in the present-position frame).
    pub goal: i32,
    /// Homing offset register (raw).
    pub homing_offset: i32,
    /// Min / max position limit registers (ticks).
    pub min_limit: i32,
    /// See `min_limit`.
    pub max_limit: i32,
    /// Largest speed (ticks/s).
    pub max_speed: f32,
}

impl EmuServo {
    /// A servo at `position` ticks, torque off, limits 0..=4095.
    pub fn new(id: u8, model: u16, position: f32) -> Self {
        Self {
            id,
            model,
            position,
            velocity: 0.0,
            torque: false,
            goal: position.round() as i32,
            homing_offset: 0,
            min_limit: 0,
            max_limit: 4095,
            max_speed: 4096.0,
        }
    }

    /// `dt` seconds of motion: with torque on, toward `goal_actual` (the goal
    /// in the horn's frame) at most `max_speed`; off, still.
    pub fn step(&mut self, goal_actual: f32, dt: f32) {
        if !self.torque {
            self.velocity = 0.0;
            return;
        }
        let err = goal_actual - self.position;
        let v = (err * 30.0).clamp(-self.max_speed, self.max_speed);
        self.velocity = v;
        self.position += v * dt;
    }
}

/// Everything the emulated servos hold; shared with the test.
#[derive(Debug, Default)]
pub struct EmuBusState {
    /// The servos.
    pub servos: Vec<EmuServo>,
    /// Every SYNC_WRITE of goal positions, in order: (id, goal) per servo.
    pub goal_writes: Vec<Vec<(u8, i32)>>,
    /// Instruction packets accepted.
    pub packets: u64,
    /// Instruction packets refused (bad checksum/CRC, malformed).
    pub bad_packets: u64,
}

impl EmuBusState {
    /// The servo with `id`.
    pub fn servo_mut(&mut self, id: u8) -> Option<&mut EmuServo> {
        self.servos.iter_mut().find(|s| s.id == id)
    }

    /// The servo with `id`.
    pub fn servo(&self, id: u8) -> Option<&EmuServo> {
        self.servos.iter().find(|s| s.id == id)
    }
}

/// Fault switches (set from the test, taken by the device).
#[derive(Debug, Default)]
pub struct BusFaults {
    /// The next this-many status packets go out with a wrong checksum/CRC.
    pub corrupt_status: AtomicU32,
    /// The next this-many status packets are not sent.
    pub drop_status: AtomicU32,
    /// Status packets from this servo id carry the overload error bit (0: none).
    pub overload_id: AtomicU8,
    /// Close the port now, as a pulled USB adapter does.
    pub unplug: AtomicBool,
}

impl BusFaults {
    /// Take one from a counter; true if it was non-zero.
    pub fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// One family's device side: takes the host's bytes one at a time and, when
/// an instruction packet is complete, applies it to the servos and appends
/// its status packet(s) to `reply`.
pub trait ServoDevice: Send + 'static {
    /// Feed one received byte.
    fn feed(&mut self, byte: u8, bus: &mut EmuBusState, faults: &BusFaults, reply: &mut Vec<u8>);

    /// The goal of `servo` in the horn's frame (the family's homing-offset
    /// convention), for the dynamics.
    fn goal_actual(&self, servo: &EmuServo) -> f32;
}

/// A running emulated bus.
pub struct EmuBus {
    /// The port to open (the pty's slave).
    pub path: String,
    /// The servos' state.
    pub state: Arc<Mutex<EmuBusState>>,
    /// Fault switches.
    pub faults: Arc<BusFaults>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EmuBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuBus").field("path", &self.path).finish()
    }
}

impl EmuBus {
    /// Start `device` with `servos` on a fresh pseudo-terminal.
    pub fn spawn<D: ServoDevice>(device: D, servos: Vec<EmuServo>) -> std::io::Result<Self> {
        let (master, slave) = TTYPort::pair().map_err(std::io::Error::other)?;
        let path = slave
            .name()
            .ok_or_else(|| std::io::Error::other("the pty has no name"))?;
        let state = Arc::new(Mutex::new(EmuBusState {
            servos,
            ..EmuBusState::default()
        }));
        let faults = Arc::new(BusFaults::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, faults, stop) = (state.clone(), faults.clone(), stop.clone());
            std::thread::spawn(move || run(device, master, slave, &state, &faults, &stop))
        };
        Ok(Self {
            path,
            state,
            faults,
            stop,
            thread: Some(thread),
        })
    }

    /// Lock the state (a poisoned lock is still read: the test wants to see).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, EmuBusState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `id` has torque on.
    pub fn torque(&self, id: u8) -> Option<bool> {
        self.lock().servo(id).map(|s| s.torque)
    }

    /// Move a servo whose torque is off, as a hand moves a leader arm.
    pub fn move_by_hand(&self, id: u8, position: f32) {
        if let Some(s) = self.lock().servo_mut(id)
            && !s.torque
        {
            s.position = position;
        }
    }

    /// Stop the emulator and close the port.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EmuBus {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn run<D: ServoDevice>(
    mut device: D,
    mut master: TTYPort,
    slave: TTYPort,
    state: &Mutex<EmuBusState>,
    faults: &BusFaults,
    stop: &AtomicBool,
) {
    let _slave = slave;
    let _ = master.set_timeout(Duration::from_millis(1));
    let mut buf = [0u8; 512];
    let mut reply = Vec::with_capacity(1024);
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if faults.unplug.load(Ordering::Relaxed) {
            // The adapter is gone: closing the pty's master side makes the
            // host's reads and writes fail (EIO), as a pulled USB adapter's do.
            return;
        }
        let n = match master.bytes_to_read() {
            Ok(0) => 0,
            Ok(k) => master.read(&mut buf[..(k as usize).min(512)]).unwrap_or(0),
            Err(_) => 0,
        };
        {
            let mut s = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for &b in &buf[..n] {
                device.feed(b, &mut s, faults, &mut reply);
            }
            let dt = last.elapsed().as_secs_f32().min(0.05);
            last = Instant::now();
            for servo in s.servos.iter_mut() {
                let g = device.goal_actual(servo);
                servo.step(g, dt);
            }
        }
        if !reply.is_empty() {
            let _ = master.write_all(&reply);
            reply.clear();
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}
