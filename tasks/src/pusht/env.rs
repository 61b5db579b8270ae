//! The Push-T environment, on the `rapier2d` physics engine.
//!
//! The published rules (gym-pusht, Chi et al.): a 512×512 table with walls,
//! a circular agent (radius 15) whose velocity follows a PD law toward the
//! commanded position (k_p = 100, k_v = 20) at 100 Hz, a T block pushed by the
//! agent, control at 10 Hz (10 physics steps per action), reward = coverage of
//! the goal T pose (256, 256, π/4) by the block, success at coverage > 0.95,
//! at most 300 steps.
//!
//! The original runs on pymunk (Chipmunk 2D). What we reproduce and where it
//! may differ:
//! - Same geometry: the T is a 120×30 bar and a 30×90 stem; the block's
//!   origin (the position in the state) is the middle of the bar's outer edge;
//!   mass 1 with the original's centre of gravity (0, 45) and moment 3000 (the
//!   original sums the bar's moment twice; we keep its number).
//! - Same quasi-static feel: the original sets the space's damping to 0, which
//!   in Chipmunk zeroes every dynamic body's velocity at the start of each
//!   step, so the block only moves while it is pushed. We zero the block's
//!   velocity before each physics step.
//! - Same contact materials in effect: the original sets `friction` on the
//!   bodies, which Chipmunk ignores (friction belongs to shapes), so every
//!   contact is frictionless; ours are frictionless with no restitution.
//! - The agent is kinematic in both: walls do not stop it, the block cannot
//!   push it back.
//! - Different: rapier's contact solver (soft constraints, its own
//!   penetration recovery and warm starting) is not Chipmunk's, so a replayed
//!   demonstration drifts from its recorded states over hundreds of steps;
//!   `replay_coverage` measures how far (the README reports it).
//! - Random initial states follow the original's draw (agent in [50, 450)²,
//!   block in [100, 400)², angle in [−π, π)) including its legacy order of
//!   setting position before angle, which rotates the block about its centre
//!   of gravity and so moves the origin; the generator is ours (ChaCha8), so
//!   seed s here is not seed s there.

use super::geometry::{T_PARTS, coverage};
use rapier2d::prelude::*;
use std::f32::consts::{FRAC_PI_4, PI, TAU};

/// Agent radius, pixels.
pub const AGENT_RADIUS: f32 = 15.0;
/// Goal pose of the block: x, y, angle.
pub const GOAL: [f32; 3] = [256.0, 256.0, FRAC_PI_4];
/// PD gains of the agent.
pub const K_P: f32 = 100.0;
/// Velocity gain of the agent's PD law.
pub const K_V: f32 = 20.0;
/// Physics step, seconds.
pub const DT: f32 = 0.01;
/// Physics steps per control step (10 Hz control).
pub const SUBSTEPS: usize = 10;
/// Control rate (Hz): one action every `SUBSTEPS · DT` seconds.
pub const CONTROL_HZ: f64 = 10.0;
/// Control steps per episode at most.
pub const MAX_STEPS: usize = 300;
/// Coverage above which an episode succeeds (and ends).
pub const SUCCESS_COVERAGE: f32 = 0.95;
/// The block's centre of gravity in its own frame (the original's choice:
/// the midpoint of the two rectangles' centroids).
pub const BLOCK_COM: [f32; 2] = [0.0, 45.0];
/// The block's mass.
pub const BLOCK_MASS: f32 = 1.0;
/// The block's moment of inertia about its centre of gravity (the original's number).
pub const BLOCK_INERTIA: f32 = 3000.0;
/// Observation length: agent x, y, block x, y, angle.
pub const OBS_DIM: usize = 5;
/// Action length: commanded agent x, y.
pub const ACTION_DIM: usize = 2;

/// The original's reward of a coverage: `clip(coverage / 0.95, 0, 1)`
/// (monotone, so the highest reward is the reward of the highest coverage).
pub fn reward(coverage: f32) -> f32 {
    (coverage / SUCCESS_COVERAGE).clamp(0.0, 1.0)
}

/// What one control step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// Coverage of the goal by the block after the step, in [0, 1].
    pub coverage: f32,
    /// The original's reward, `clip(coverage / 0.95, 0, 1)`.
    pub reward: f32,
    /// Coverage above [`SUCCESS_COVERAGE`].
    pub success: bool,
}

/// One Push-T table.
pub struct PushT {
    world: PhysicsWorld,
    agent: RigidBodyHandle,
    block: RigidBodyHandle,
    agent_velocity: Vector,
}

impl std::fmt::Debug for PushT {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushT")
            .field("state", &self.observe())
            .finish()
    }
}

impl PushT {
    /// A table in the given state (agent x, y, block x, y, angle), exactly.
    pub fn new(state: [f32; OBS_DIM]) -> Self {
        let mut world = PhysicsWorld::new();
        world.gravity = Vector::ZERO;
        world.integration_parameters.dt = DT;
        // Pixels: objects are tens of units across.
        world.integration_parameters.length_unit = 30.0;
        let material = |c: ColliderBuilder| c.friction(0.0).restitution(0.0);
        // Walls: the original's four segments of radius 2.
        for (a, b) in [
            ([5.0, 506.0], [5.0, 5.0]),
            ([5.0, 5.0], [506.0, 5.0]),
            ([506.0, 5.0], [506.0, 506.0]),
            ([5.0, 506.0], [506.0, 506.0]),
        ] {
            world
                .colliders
                .insert(material(ColliderBuilder::capsule_from_endpoints(
                    Vector::new(a[0], a[1]),
                    Vector::new(b[0], b[1]),
                    2.0,
                )));
        }
        let agent = world.bodies.insert(
            RigidBodyBuilder::kinematic_velocity_based()
                .translation(Vector::new(state[0], state[1]))
                .can_sleep(false),
        );
        world.colliders.insert_with_parent(
            material(ColliderBuilder::ball(AGENT_RADIUS)),
            agent,
            &mut world.bodies,
        );
        let block = world.bodies.insert(
            RigidBodyBuilder::dynamic()
                .pose(Pose::new(Vector::new(state[2], state[3]), state[4]))
                .additional_mass_properties(MassProperties::new(
                    Vector::new(BLOCK_COM[0], BLOCK_COM[1]),
                    BLOCK_MASS,
                    BLOCK_INERTIA,
                ))
                .can_sleep(false),
        );
        for part in T_PARTS {
            let (lo, hi) = (part[0], part[2]);
            let centre = Vector::new(0.5 * (lo[0] + hi[0]), 0.5 * (lo[1] + hi[1]));
            world.colliders.insert_with_parent(
                material(ColliderBuilder::cuboid(
                    0.5 * (hi[0] - lo[0]),
                    0.5 * (hi[1] - lo[1]),
                ))
                .translation(centre)
                .density(0.0),
                block,
                &mut world.bodies,
            );
        }
        let mut env = Self {
            world,
            agent,
            block,
            agent_velocity: Vector::ZERO,
        };
        // As the original after a reset: one physics step settles overlaps.
        env.physics_step();
        env
    }

    /// A seeded random initial state, drawn as the original draws it.
    pub fn random_state(rng: &mut impl rand::Rng) -> [f32; OBS_DIM] {
        let ax = rng.random_range(50..450) as f32;
        let ay = rng.random_range(50..450) as f32;
        let bx = rng.random_range(100..400) as f32;
        let by = rng.random_range(100..400) as f32;
        let angle = rng.random_range(-PI..PI);
        // The original sets the position (placing the centre of gravity at
        // the origin + COM with angle 0), then the angle, which rotates the
        // body about its centre of gravity: the origin moves.
        let (s, c) = angle.sin_cos();
        let (cx, cy) = (bx + BLOCK_COM[0], by + BLOCK_COM[1]);
        let ox = cx - (c * BLOCK_COM[0] - s * BLOCK_COM[1]);
        let oy = cy - (s * BLOCK_COM[0] + c * BLOCK_COM[1]);
        [ax, ay, ox, oy, angle]
    }

    /// The state: agent x, y, block x, y (its origin), angle in [0, 2π).
    pub fn observe(&self) -> [f32; OBS_DIM] {
        let a = self.world.bodies[self.agent].translation();
        let (p, angle) = self.block_pose();
        [a.x, a.y, p[0], p[1], angle.rem_euclid(TAU)]
    }

    /// The block's origin and angle (unwrapped).
    pub fn block_pose(&self) -> ([f32; 2], f32) {
        let b = &self.world.bodies[self.block];
        let t = b.translation();
        ([t.x, t.y], b.rotation().angle())
    }

    /// Coverage of the goal by the block now.
    pub fn coverage(&self) -> f32 {
        let (p, angle) = self.block_pose();
        coverage([p[0], p[1], angle], GOAL)
    }

    /// Drive the agent toward `target` (pixels) for one control step.
    pub fn step(&mut self, target: [f32; ACTION_DIM]) -> StepOutcome {
        let target = Vector::new(target[0], target[1]);
        for _ in 0..SUBSTEPS {
            let pos = self.world.bodies[self.agent].translation();
            let accel = K_P * (target - pos) - K_V * self.agent_velocity;
            self.agent_velocity += accel * DT;
            self.world.bodies[self.agent].set_linvel(self.agent_velocity, true);
            self.physics_step();
        }
        let coverage = self.coverage();
        StepOutcome {
            coverage,
            reward: reward(coverage),
            success: coverage > SUCCESS_COVERAGE,
        }
    }

    fn physics_step(&mut self) {
        let block = &mut self.world.bodies[self.block];
        block.set_linvel(Vector::ZERO, true);
        block.set_angvel(0.0, true);
        self.world.step();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_block_at_the_goal_covers_it_and_a_far_block_does_not() {
        let env = PushT::new([50.0, 50.0, GOAL[0], GOAL[1], GOAL[2]]);
        assert!(env.coverage() > 0.999, "{}", env.coverage());
        let env = PushT::new([50.0, 50.0, 100.0, 420.0, 0.0]);
        assert_eq!(env.coverage(), 0.0);
    }

    #[test]
    fn the_agent_settles_on_its_target_without_touching_the_block() {
        let mut env = PushT::new([100.0, 100.0, 380.0, 250.0, 0.0]);
        let before = env.observe();
        let mut last = StepOutcome {
            coverage: 0.0,
            reward: 0.0,
            success: false,
        };
        for _ in 0..20 {
            last = env.step([150.0, 120.0]);
        }
        let s = env.observe();
        assert!(
            (s[0] - 150.0).abs() < 0.5 && (s[1] - 120.0).abs() < 0.5,
            "{s:?}"
        );
        assert_eq!(&s[2..], &before[2..], "the block moved untouched");
        assert!(!last.success);
        // Critically damped-ish PD: after one control step it is on its way
        // but not there (0.1 s at k_p 100, k_v 20).
        let mut env = PushT::new([100.0, 100.0, 380.0, 250.0, 0.0]);
        env.step([200.0, 100.0]);
        let x = env.observe()[0];
        assert!(x > 120.0 && x < 199.0, "{x}");
    }

    #[test]
    fn pushing_moves_the_block_and_it_stops_when_released() {
        // Block at rest with its bar's outer edge facing the agent from below
        // (angle 0: the bar spans y 300..330, the stem grows to 420).
        let mut env = PushT::new([256.0, 250.0, 256.0, 300.0, 0.0]);
        for _ in 0..10 {
            env.step([256.0, 330.0]);
        }
        let pushed = env.observe();
        assert!(pushed[3] > 310.0, "the block was not pushed: {pushed:?}");
        // A straight push through the centre line barely turns it.
        let turn = pushed[4].min(TAU - pushed[4]);
        assert!(turn < 0.1, "{pushed:?}");
        // Pull the agent back: the block stays where it was left.
        for _ in 0..10 {
            env.step([256.0, 100.0]);
        }
        let after = env.observe();
        assert!(
            (after[3] - pushed[3]).abs() < 1.0,
            "{pushed:?} -> {after:?}"
        );
    }

    #[test]
    fn an_off_centre_push_turns_the_block() {
        let mut env = PushT::new([300.0, 250.0, 256.0, 300.0, 0.0]);
        for _ in 0..10 {
            env.step([300.0, 340.0]);
        }
        let s = env.observe();
        let turn = s[4].min(TAU - s[4]);
        assert!(turn > 0.1, "{s:?}");
    }

    #[test]
    fn random_states_are_seeded_and_inside_the_table() {
        let draw = |seed| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            (0..50)
                .map(|_| PushT::random_state(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        for s in draw(3) {
            assert!((50.0..450.0).contains(&s[0]) && (50.0..450.0).contains(&s[1]));
            // The origin moves at most 2 · |COM| = 90 px from the draw.
            assert!(s[2] > 100.0 - 90.0 && s[2] < 400.0 + 90.0, "{s:?}");
            assert!(s[3] > 100.0 - 90.0 && s[3] < 400.0 + 90.0, "{s:?}");
        }
    }

    #[test]
    fn the_same_actions_give_the_same_states() {
        let run = || {
            let mut env = PushT::new([256.0, 250.0, 250.0, 300.0, 0.3]);
            (0..30)
                .map(|i| {
                    env.step([256.0 + (i as f32).sin() * 40.0, 330.0]);
                    env.observe()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
