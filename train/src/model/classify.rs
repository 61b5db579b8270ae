//! The paper's discrete baselines: **Discretised** (uniform bins per action
//! value, independent cross-entropy) and **K-means** (cross-entropy over
//! action centres fitted on the training actions), optionally with a
//! regressed **residual** to the chosen centre (the Behaviour Transformer
//! recipe). Both output one row of scores that the runtime's
//! [`ActionDecoder`] turns into an action, so training, evaluation and the
//! deployed runtime read the scores the same way.

use crate::error::TrainError;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use diffbc_runtime::decode::{ActionDecoder, Choice, DecodeScheme};
use serde::{Deserialize, Serialize};

/// Sizes of the discrete baselines (shared by Discretised and K-means).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    /// Width of the two hidden layers.
    pub hidden: usize,
    /// Discretised: uniform bins per action value.
    pub bins: usize,
    /// K-means: number of action centres.
    pub clusters: usize,
    /// K-means + residual: weight of the offset MSE against the cross-entropy.
    pub residual_weight: f64,
    /// Lloyd iterations of the K-means fit.
    pub kmeans_iterations: usize,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            hidden: 256,
            bins: 20,
            clusters: 10,
            residual_weight: 100.0,
            kmeans_iterations: 50,
        }
    }
}

impl BaselineConfig {
    /// Check sizes; errors name the field.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.hidden == 0 {
            return Err(TrainError::config("baseline.hidden", "must be at least 1"));
        }
        if self.bins < 2 {
            return Err(TrainError::config("baseline.bins", "must be at least 2"));
        }
        if self.clusters == 0 {
            return Err(TrainError::config(
                "baseline.clusters",
                "must be at least 1",
            ));
        }
        if !(self.residual_weight >= 0.0 && self.residual_weight.is_finite()) {
            return Err(TrainError::config(
                "baseline.residual_weight",
                "must be finite and ≥ 0",
            ));
        }
        Ok(())
    }

    fn trunk<B: Backend>(&self, embedding: usize, device: &B::Device) -> (Linear<B>, Linear<B>) {
        (
            LinearConfig::new(embedding, self.hidden).init(device),
            LinearConfig::new(self.hidden, self.hidden).init(device),
        )
    }

    /// A Discretised head; its bin ranges start at [-1, 1] until
    /// [`BinsHead::fit`] sets them from the data.
    pub fn init_bins<B: Backend>(
        &self,
        embedding: usize,
        action: usize,
        device: &B::Device,
    ) -> BinsHead<B> {
        let (fc1, fc2) = self.trunk(embedding, device);
        BinsHead {
            fc1,
            fc2,
            fc3: LinearConfig::new(self.hidden, action * self.bins).init(device),
            low: Param::from_tensor(Tensor::full([action], -1.0, device)),
            high: Param::from_tensor(Tensor::full([action], 1.0, device)),
            bins: self.bins,
        }
    }

    /// A K-means head (with an offset output when `residual`); its centres
    /// are zero until [`CentresHead::fit`] sets them from the data.
    pub fn init_centres<B: Backend>(
        &self,
        embedding: usize,
        action: usize,
        residual: bool,
        device: &B::Device,
    ) -> CentresHead<B> {
        let (fc1, fc2) = self.trunk(embedding, device);
        let k = self.clusters;
        CentresHead {
            fc1,
            fc2,
            logits: LinearConfig::new(self.hidden, k).init(device),
            offsets: residual.then(|| LinearConfig::new(self.hidden, k * action).init(device)),
            centres: Param::from_tensor(Tensor::zeros([k, action], device)),
            residual_weight: self.residual_weight,
        }
    }
}

fn detached_vec<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> Vec<f32> {
    p.val()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default()
}

/// Discretised baseline: embedding → GELU MLP → `action · bins` logits.
#[derive(Module, Debug)]
pub struct BinsHead<B: Backend> {
    /// embedding → hidden.
    pub fc1: Linear<B>,
    /// hidden → hidden.
    pub fc2: Linear<B>,
    /// hidden → logits, value-major (`[value][bin]`).
    pub fc3: Linear<B>,
    /// Lower edge of the bins per action value (fitted, not trained).
    pub low: Param<Tensor<B, 1>>,
    /// Upper edge of the bins per action value (fitted, not trained).
    pub high: Param<Tensor<B, 1>>,
    /// Bins per action value.
    pub bins: usize,
}

impl<B: Backend> BinsHead<B> {
    /// `[rows, E]` → logits `[rows, A · bins]`.
    pub fn forward(&self, embedding: Tensor<B, 2>) -> Tensor<B, 2> {
        self.fc3
            .forward(gelu(self.fc2.forward(gelu(self.fc1.forward(embedding)))))
    }

    /// Set the bin ranges to the range of `actions` (`[rows, A]`, normalised
    /// units), widened by 1 % so the extremes fall inside.
    pub fn fit(self, actions: &[f32], action: usize) -> Self {
        let device = self.low.val().device();
        let mut low = vec![f32::INFINITY; action];
        let mut high = vec![f32::NEG_INFINITY; action];
        for row in actions.chunks_exact(action) {
            for (i, &v) in row.iter().enumerate() {
                low[i] = low[i].min(v);
                high[i] = high[i].max(v);
            }
        }
        for i in 0..action {
            if low[i].partial_cmp(&high[i]) != Some(std::cmp::Ordering::Less) {
                // A constant (or empty) dimension: a unit range around it.
                let c = if low[i].is_finite() { low[i] } else { 0.0 };
                (low[i], high[i]) = (c - 0.5, c + 0.5);
            }
            let pad = 0.005 * (high[i] - low[i]);
            low[i] -= pad;
            high[i] += pad;
        }
        let set = |p: Param<Tensor<B, 1>>, v: Vec<f32>| {
            let d = device.clone();
            p.map(move |_| Tensor::from_data(TensorData::new(v, [action]), &d))
        };
        Self {
            low: set(self.low, low),
            high: set(self.high, high),
            ..self
        }
    }

    /// The bin of each value of `clean` (`[rows, A]`): the training labels,
    /// the same bins as the runtime's `bin_index`.
    pub fn labels(&self, clean: Tensor<B, 2>) -> Tensor<B, 2, Int> {
        let low = self.low.val().detach().unsqueeze_dim::<2>(0);
        let high = self.high.val().detach().unsqueeze_dim::<2>(0);
        ((clean - low.clone()) / (high - low))
            .mul_scalar(self.bins as f32)
            .floor()
            .clamp(0.0, (self.bins - 1) as f32)
            .int()
    }

    /// Mean cross-entropy of the bins that hold `clean` (`[rows, A]`).
    pub fn loss(&self, embedding: Tensor<B, 2>, clean: Tensor<B, 2>) -> Tensor<B, 1> {
        let [rows, a] = clean.dims();
        let labels = self.labels(clean).reshape([rows, a, 1]);
        let logp = exact_log_softmax(self.forward(embedding).reshape([rows, a, self.bins]), 2);
        logp.gather(2, labels).mean().neg()
    }

    /// The runtime decoder for these bins.
    pub fn decoder(&self) -> ActionDecoder {
        ActionDecoder {
            choice: Choice::Sample,
            scheme: DecodeScheme::Bins {
                bins: self.bins,
                low: detached_vec(&self.low),
                high: detached_vec(&self.high),
            },
        }
    }
}

/// K-means baseline: embedding → GELU MLP → `k` logits (+ `k · A` offsets).
#[derive(Module, Debug)]
pub struct CentresHead<B: Backend> {
    /// embedding → hidden.
    pub fc1: Linear<B>,
    /// hidden → hidden.
    pub fc2: Linear<B>,
    /// hidden → one logit per centre.
    pub logits: Linear<B>,
    /// hidden → an offset per centre (`[k][A]`), K-means + residual only.
    pub offsets: Option<Linear<B>>,
    /// Action centres `[k, A]` (fitted by K-means, not trained).
    pub centres: Param<Tensor<B, 2>>,
    /// Weight of the offset MSE.
    pub residual_weight: f64,
}

impl<B: Backend> CentresHead<B> {
    /// `[rows, E]` → scores `[rows, k (+ k·A)]`.
    pub fn forward(&self, embedding: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = gelu(self.fc2.forward(gelu(self.fc1.forward(embedding))));
        let logits = self.logits.forward(h.clone());
        match &self.offsets {
            Some(o) => Tensor::cat(vec![logits, o.forward(h)], 1),
            None => logits,
        }
    }

    /// Set the centres by K-means on `actions` (`[rows, A]`, normalised units).
    pub fn fit(self, actions: &[f32], action: usize, iterations: usize, seed: u64) -> Self {
        let [k, _] = self.centres.val().dims();
        let device = self.centres.val().device();
        let c = crate::kmeans::fit(actions, action, k, iterations, seed).centres;
        Self {
            centres: self
                .centres
                .map(move |_| Tensor::from_data(TensorData::new(c, [k, action]), &device)),
            ..self
        }
    }

    /// Cross-entropy of the nearest centre to `clean` (`[rows, A]`), plus
    /// `residual_weight` × the MSE of the offset to that centre.
    pub fn loss(&self, embedding: Tensor<B, 2>, clean: Tensor<B, 2>) -> Tensor<B, 1> {
        let [rows, a] = clean.dims();
        let centres = self.centres.val().detach();
        let k = centres.dims()[0];
        // ‖x − c‖² up to the per-row constant ‖x‖².
        let cross = clean.clone().matmul(centres.clone().transpose());
        let norms = centres.clone().powf_scalar(2.0).sum_dim(1).reshape([1, k]);
        let labels = (norms - cross.mul_scalar(2.0)).argmin(1); // [rows, 1]
        let scores = self.forward(embedding);
        let logits = scores.clone().slice([0..rows, 0..k]);
        let ce = exact_log_softmax(logits, 1)
            .gather(1, labels.clone())
            .mean()
            .neg();
        if self.offsets.is_none() {
            return ce;
        }
        let offsets = scores.slice([0..rows, k..k + k * a]).reshape([rows, k, a]);
        let idx = labels.clone().reshape([rows, 1, 1]).repeat_dim(2, a);
        let chosen = offsets.gather(1, idx).reshape([rows, a]);
        let target = clean - centres.select(0, labels.reshape([rows]));
        let mse = (chosen - target).powf_scalar(2.0).mean();
        ce + mse.mul_scalar(self.residual_weight)
    }

    /// The runtime decoder for these centres.
    pub fn decoder(&self) -> ActionDecoder {
        ActionDecoder {
            choice: Choice::Sample,
            scheme: DecodeScheme::Centres {
                k: self.centres.val().dims()[0],
                centres: detached_vec(&self.centres),
                residual: self.offsets.is_some(),
            },
        }
    }
}

/// `log_softmax` along `dim` (the same value to rounding) whose gradient is
/// exact and the same in every run.
///
/// burn's `log_softmax` ends in a `log`, whose gradient multiplies by the
/// reciprocal of its input; burn-ndarray 0.21's SIMD reciprocal is the
/// estimate `_mm256_rcp_ps` (relative error up to 2.4e-4, measured), and
/// that gradient differed between two training runs with the same seed. Here the log-sum-exp is computed
/// on detached values and re-attached through its first-order term
/// `Σ p·(x − x̄)` (zero in value, gradient the softmax `p`), so the backward
/// pass is subtractions, products and sums only.
pub(crate) fn exact_log_softmax<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    dim: usize,
) -> Tensor<B, D> {
    let xd = x.clone().detach();
    let max = xd.clone().max_dim(dim);
    let lse = max.clone() + (xd.clone() - max).exp().sum_dim(dim).log();
    let p = (xd.clone() - lse.clone()).exp();
    // Zero in value; its gradient is the softmax p, the gradient of lse.
    let first_order = (p * (x.clone() - xd)).sum_dim(dim);
    x - (lse + first_order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use diffbc_runtime::decode::bin_index;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    type Tb = Autodiff<NdArray<f32>>;

    /// Embeddings `[n, 4]` and actions `[n, 2]` with two clusters, centre
    /// (±2, 0), and an offset that is a function of the embedding.
    fn clustered(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut emb = Vec::new();
        let mut act = Vec::new();
        for _ in 0..n {
            let e: [f32; 4] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
            let side = if e[0] > 0.0 { 2.0 } else { -2.0 };
            act.extend_from_slice(&[side + 0.4 * e[1], 0.4 * e[2]]);
            emb.extend_from_slice(&e);
        }
        (emb, act)
    }

    fn train_head(mut head: CentresHead<Tb>, emb: &[f32], act: &[f32]) -> CentresHead<Tb> {
        let device = Default::default();
        let n = act.len() / 2;
        let x = Tensor::<Tb, 2>::from_data(TensorData::new(emb.to_vec(), [n, 4]), &device);
        let y = Tensor::<Tb, 2>::from_data(TensorData::new(act.to_vec(), [n, 2]), &device);
        let mut optim = AdamConfig::new().init::<Tb, CentresHead<Tb>>();
        for _ in 0..300 {
            let loss = head.loss(x.clone(), y.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(3e-3, head, grads);
        }
        head
    }

    #[test]
    fn the_residual_head_reduces_the_error_against_its_centre() {
        let device = Default::default();
        <Tb as Backend>::seed(&device, 1);
        let (emb, act) = clustered(512, 2);
        let cfg = BaselineConfig {
            hidden: 32,
            clusters: 2,
            ..BaselineConfig::default()
        };
        let head = cfg
            .init_centres::<Tb>(4, 2, true, &device)
            .fit(&act, 2, 50, 3);
        let centres = detached_vec(&head.centres);
        let before = detached_vec(&head.centres);
        let head = train_head(head, &emb, &act);
        assert_eq!(
            detached_vec(&head.centres),
            before,
            "centres are fitted, not trained"
        );

        let (emb, act) = clustered(256, 9);
        let x = Tensor::<Tb, 2>::from_data(TensorData::new(emb, [256, 4]), &device);
        let scores: Vec<f32> = head.forward(x).into_data().to_vec().expect("scores");
        let (mut centre_err, mut residual_err) = (0.0f64, 0.0f64);
        for (row, a) in scores.chunks_exact(2 + 4).zip(act.chunks_exact(2)) {
            // The nearest centre (what training targets), not the predicted one.
            let j = (0..2)
                .min_by(|&p, &q| {
                    let d = |c: usize| {
                        (0..2)
                            .map(|i| (a[i] - centres[c * 2 + i]).powi(2))
                            .sum::<f32>()
                    };
                    d(p).total_cmp(&d(q))
                })
                .expect("two centres");
            for i in 0..2 {
                let c = centres[j * 2 + i];
                centre_err += ((a[i] - c) as f64).powi(2);
                residual_err += ((a[i] - c - row[2 + j * 2 + i]) as f64).powi(2);
            }
        }
        assert!(
            residual_err < 0.25 * centre_err,
            "centre + offset error {residual_err:.3} vs centre alone {centre_err:.3}"
        );
        // The logits choose the right side.
        let decoder = head.decoder();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut right = 0;
        for (row, a) in scores.chunks_exact(6).zip(act.chunks_exact(2)) {
            let mut out = [0.0f32; 2];
            decoder.decode(row, Choice::Argmax, &mut rng, &mut out);
            right += usize::from(out[0].signum() == a[0].signum());
        }
        assert!(right > 240, "{right}/256 on the right side");
    }

    #[test]
    fn bin_labels_match_the_runtime_decoder_and_fit_covers_the_data() {
        let device = Default::default();
        let cfg = BaselineConfig {
            hidden: 8,
            bins: 7,
            ..BaselineConfig::default()
        };
        let (_, act) = clustered(200, 4);
        let head = crate::model::with_backend_rng::<NdArray<f32>, _>(&device, 0, || {
            cfg.init_bins::<NdArray<f32>>(4, 2, &device)
        })
        .fit(&act, 2);
        let decoder = head.decoder();
        let DecodeScheme::Bins { low, high, bins } = &decoder.scheme else {
            panic!("bins head decodes bins")
        };
        for row in act.chunks_exact(2) {
            for i in 0..2 {
                assert!(low[i] < row[i] && row[i] < high[i]);
                // The centre of the value's bin is within half a bin of it.
                let j = bin_index(low[i], high[i], *bins, row[i]);
                let c = diffbc_runtime::decode::bin_centre(low[i], high[i], *bins, j);
                assert!((c - row[i]).abs() <= 0.5 * (high[i] - low[i]) / *bins as f32 + 1e-5);
            }
        }
        // The training labels are the runtime's bins.
        let n = act.len() / 2;
        let y = Tensor::<NdArray<f32>, 2>::from_data(TensorData::new(act.clone(), [n, 2]), &device);
        let labels: Vec<i64> = head
            .labels(y)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .expect("labels");
        for (r, row) in act.chunks_exact(2).enumerate() {
            for i in 0..2 {
                assert_eq!(
                    labels[r * 2 + i] as usize,
                    bin_index(low[i], high[i], *bins, row[i])
                );
            }
        }
    }

    /// The cross-entropy gradient through `exact_log_softmax` is
    /// (softmax − one-hot) / count to f32 rounding, and its value is
    /// burn's `log_softmax`'s. (Through burn's own `log_softmax` the same
    /// gradient is off by up to ~2e-4 relative on x86: its `log` backward
    /// takes an estimated reciprocal.)
    #[test]
    fn exact_log_softmax_has_the_exact_cross_entropy_gradient() {
        let device = Default::default();
        let (rows, dims, bins) = (48, 3, 20);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let logits: Vec<f32> = (0..rows * dims * bins)
            .map(|_| rng.random_range(-4.0..4.0))
            .collect();
        let labels: Vec<i64> = (0..rows * dims)
            .map(|_| rng.random_range(0..bins as i64))
            .collect();
        let x = Tensor::<Tb, 3>::from_data(
            TensorData::new(logits.clone(), [rows, dims, bins]),
            &device,
        )
        .require_grad();
        let ours = exact_log_softmax(x.clone(), 2);
        let burns = burn::tensor::activation::log_softmax(x.clone(), 2);
        let (a, b): (Vec<f32>, Vec<f32>) = (
            ours.clone().into_data().to_vec().expect("ours"),
            burns.into_data().to_vec().expect("burn's"),
        );
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let l = Tensor::<Tb, 3, burn::tensor::Int>::from_data(
            TensorData::new(labels.clone(), [rows, dims, 1]),
            &device,
        );
        let loss = ours.gather(2, l).mean().neg();
        let grads = loss.backward();
        let g: Vec<f32> = x
            .grad(&grads)
            .expect("grad")
            .into_data()
            .to_vec()
            .expect("g");
        let count = (rows * dims) as f64;
        for (r, row) in logits.chunks_exact(bins).enumerate() {
            let m = row.iter().fold(f64::MIN, |m, &v| m.max(f64::from(v)));
            let z: f64 = row.iter().map(|&v| (f64::from(v) - m).exp()).sum();
            for (j, &v) in row.iter().enumerate() {
                let p = (f64::from(v) - m).exp() / z;
                let want = (p - f64::from(u8::from(labels[r] == j as i64))) / count;
                let got = f64::from(g[r * bins + j]);
                assert!(
                    (got - want).abs() <= 1e-6 / count + 1e-6 * want.abs(),
                    "row {r} bin {j}: {got} vs {want}"
                );
            }
        }
    }
}
