//! The control loop does not allocate at steady state: after a warm-up run,
//! the loop thread's allocations over a 0.4 s run and a 2 s run over the
//! emulated arm are the same (each run's set-up allocates; ticks must not).
//! Counted on the calling thread only (`diffbc_alloc_count::count`): the
//! loop runs there; the emulated arm's and the controller's threads are not
//! counted.

use diffbc_bridge::Controller;
use diffbc_bridge::{Bridge, LoopConfig};
use diffbc_emulator::SimConfig;
use diffbc_protocol::Telemetry;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: diffbc_alloc_count::Counting = diffbc_alloc_count::Counting;

struct Hold;

impl Controller for Hold {
    fn act(&mut self, t: &Telemetry, action: &mut [f32]) -> Result<(), String> {
        for (a, p) in action.iter_mut().zip(&t.positions) {
            *a = p + 0.01;
        }
        Ok(())
    }
}

fn loop_allocations(bridge: &mut Bridge, seconds: f64) -> (u64, u64) {
    let config = LoopConfig {
        rate_hz: 200.0,
        duration: Some(Duration::from_secs_f64(seconds)),
        telemetry_timeout: Duration::from_secs(1),
        ..LoopConfig::default()
    };
    let stop = AtomicBool::new(false);
    let mut c = Hold;
    let (report, n) = diffbc_alloc_count::count(|| bridge.run(&mut c, &config, &stop));
    assert_eq!(report.outcome, Ok(()));
    (n, report.stats.ticks)
}

#[test]
fn the_control_loop_does_not_allocate_per_tick() {
    let dir = tempfile::tempdir().expect("tmp");
    let link = dir.path().join("arm");
    let mut arm = SimConfig::default_arm();
    arm.watchdog = Duration::from_secs(1);
    let sim = diffbc_emulator::spawn_pty(arm, &link).expect("pty");
    let path = link.display().to_string();
    let mut bridge = Bridge::connect(&path, 1_000_000, Duration::from_secs(2)).expect("connect");
    // Warm-up: one-time thread-local set-up (channel wait contexts, …).
    loop_allocations(&mut bridge, 0.2);
    let (short, short_ticks) = loop_allocations(&mut bridge, 0.4);
    let (long, long_ticks) = loop_allocations(&mut bridge, 2.0);
    assert!(
        long_ticks > 3 * short_ticks,
        "{long_ticks} vs {short_ticks} ticks"
    );
    // The counter works.
    let (_, one) = diffbc_alloc_count::count(|| std::hint::black_box(vec![0u8; 8]));
    assert_eq!(one, 1);
    assert_eq!(
        long, short,
        "{long_ticks} ticks allocated {long} times, {short_ticks} ticks {short} times: ticks allocate"
    );
    sim.shutdown();
}
