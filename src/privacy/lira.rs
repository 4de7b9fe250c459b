//! The likelihood-ratio attack (LiRA, Carlini et al. 2022, "Membership Inference Attacks From
//! First Principles"): train shadow models with the target's recipe, half of them on each
//! candidate example and half without it, and ask whether the target's logit-scaled
//! confidence φ on the example looks more like the IN models' or the OUT models'.
//!
//! The candidates are `count` training images (the claimed members, from `offset`) and the
//! first `count` test images (non-members). Shadow `k` trains on the recipe's training images
//! with every candidate removed, plus the candidates it is IN for. Shadows come in pairs:
//! a shuffle of the candidates keyed by the attack's seed and the pair gives shadow 2j a
//! random `count` of them and shadow 2j+1 the other `count`. So every candidate is IN for
//! exactly half of the shadows, and every shadow trains on as many images as the target did
//! (when the members lie inside the recipe's training images).
//!
//! Per candidate, φ of the IN and of the OUT shadows are each modelled as a Gaussian. With
//! fewer than [`PER_EXAMPLE_VARIANCE`] shadows the variances are pooled over all candidates
//! (the paper's "fixed variance", better with few shadows); the means are per candidate.
//! - online: log N(φ; μ_in, σ_in²) − log N(φ; μ_out, σ_out²);
//! - offline (OUT models only, so usable before the target's data is known): the one-sided
//!   test of φ against N(μ_out, σ_out²), ranked by its z-score (φ − μ_out) / σ_out.
//!
//! Not done here: the paper's queries over augmented copies (flips, shifts) of each example.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use statrs::distribution::{Continuous, Normal};

use crate::data::ImageSet;

/// From this many shadows on, each candidate gets its own variances.
pub const PER_EXAMPLE_VARIANCE: usize = 64;
/// The most shadow models an attack trains.
pub const MAX_SHADOWS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum LiraError {
    #[error("--shadows must be an even number from 4 to {MAX_SHADOWS}, got {0}")]
    Shadows(usize),
    #[error(
        "{members} members against {nonmembers} non-members: LiRA pairs them one to one; lower --limit or --member-offset"
    )]
    Unbalanced { members: usize, nonmembers: usize },
    #[error("{what}: {found} values, expected {expected}")]
    Length {
        what: &'static str,
        found: usize,
        expected: usize,
    },
    #[error(
        "--limit {count} candidates from --member-offset {offset} run past the {train} training images"
    )]
    Candidates {
        count: usize,
        offset: usize,
        train: usize,
    },
    #[error("{count} non-member candidates asked for, the test split has {test}; lower --limit")]
    NonMembers { count: usize, test: usize },
    #[error("shadow model {shadow}: its confidence on candidate {candidate} is {value}")]
    NotFinite {
        shadow: usize,
        candidate: usize,
        value: f32,
    },
    #[error("the target's confidence on candidate {candidate} is {value}")]
    TargetNotFinite { candidate: usize, value: f32 },
}

/// Which shadows train on which candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Shadow models, even, 4 to [`MAX_SHADOWS`] (with 2, one IN and one OUT value per
    /// candidate leave no variance to estimate).
    pub shadows: usize,
    /// Key of the IN/OUT assignment.
    pub seed: u64,
    /// The first member candidate's index in the training split.
    pub offset: usize,
    /// Member candidates, and as many non-member candidates (the first test images).
    pub count: usize,
}

impl Plan {
    pub fn new(shadows: usize, seed: u64, offset: usize, count: usize) -> Result<Self, LiraError> {
        if shadows < 4 || !shadows.is_multiple_of(2) || shadows > MAX_SHADOWS {
            return Err(LiraError::Shadows(shadows));
        }
        Ok(Self {
            shadows,
            seed,
            offset,
            count,
        })
    }

    /// Candidates: members `0..count`, then non-members `count..2·count`.
    pub fn candidates(&self) -> usize {
        2 * self.count
    }

    /// Which candidates shadow 2j is IN for (shadow 2j+1 is IN for the others): `count` of
    /// them, by a shuffle keyed by (seed, j).
    fn pair(&self, j: usize) -> Vec<bool> {
        let key = self.seed ^ (j as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut order: Vec<usize> = (0..self.candidates()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(key));
        let mut first = vec![false; self.candidates()];
        for &i in &order[..self.count] {
            first[i] = true;
        }
        first
    }

    /// Whether shadow `k` is IN for each candidate.
    pub fn column(&self, k: usize) -> Vec<bool> {
        let first = k.is_multiple_of(2);
        self.pair(k / 2).into_iter().map(|b| b == first).collect()
    }

    /// Whether each shadow is IN for each candidate, `[candidate][shadow]`.
    pub fn table(&self) -> Vec<Vec<bool>> {
        let columns: Vec<Vec<bool>> = (0..self.shadows).map(|k| self.column(k)).collect();
        (0..self.candidates())
            .map(|i| columns.iter().map(|c| c[i]).collect())
            .collect()
    }

    /// What shadow `k` trains on, named so that a different assignment never matches a model
    /// trained for this one.
    pub fn describe(&self, k: usize, base: &str) -> String {
        format!(
            "{base} for LiRA shadow {k} of {} (seed {}, candidates: training images {}..{} and test images 0..{}, IN for half of them, its pair for the others)",
            self.shadows,
            self.seed,
            self.offset,
            self.offset + self.count,
            self.count
        )
    }

    /// Shadow `k`'s images, gathered on the device from the whole training split `train` and
    /// the test split `test`: to train on, the recipe's `train_len` first training images
    /// without any candidate, then the member and non-member candidates it is IN for; to
    /// evaluate on, the candidates it is OUT for (images it never sees, unlike the test split,
    /// half of whose candidates it trains on).
    pub fn shadow_set(
        &self,
        k: usize,
        train_len: usize,
        train: &ImageSet,
        test: &ImageSet,
    ) -> Result<(ImageSet, ImageSet), LiraError> {
        if self.offset + self.count > train.len() {
            return Err(LiraError::Candidates {
                count: self.count,
                offset: self.offset,
                train: train.len(),
            });
        }
        if self.count > test.len() {
            return Err(LiraError::NonMembers {
                count: self.count,
                test: test.len(),
            });
        }
        let members = self.offset..self.offset + self.count;
        let inside = self.column(k);
        let mut rows: Vec<usize> = (0..train_len.min(train.len()))
            .filter(|r| !members.contains(r))
            .collect();
        // The member rows (of `train`) and non-member rows (of `test`) shadow k is IN or OUT for.
        let candidates = |wanted: bool| -> (Vec<usize>, Vec<usize>) {
            let m = members
                .clone()
                .filter(|r| inside[r - self.offset] == wanted);
            let t = (0..self.count).filter(|&i| inside[self.count + i] == wanted);
            (m.collect(), t.collect())
        };
        let (member_in, test_in) = candidates(true);
        rows.extend(member_in);
        let fit = gathered(train, &rows, test, &test_in, self.describe(k, &train.name));
        let (member_out, test_out) = candidates(false);
        let name = format!("the candidates LiRA shadow {k} is OUT for");
        let held_out = gathered(train, &member_out, test, &test_out, name);
        Ok((fit, held_out))
    }
}

/// The training images at `rows` then the test images at `test_rows`, as one set.
fn gathered(
    train: &ImageSet,
    rows: &[usize],
    test: &ImageSet,
    test_rows: &[usize],
    name: String,
) -> ImageSet {
    // With few candidates one part can be empty; no zero-length gather reaches the device.
    let parts: Vec<_> = [(train, rows), (test, test_rows)]
        .into_iter()
        .filter(|(_, r)| !r.is_empty())
        .map(|(set, r)| set.gather(r))
        .collect();
    let (images, labels) = parts.into_iter().unzip();
    ImageSet {
        images: burn::tensor::Tensor::cat(images, 0),
        labels: burn::tensor::Tensor::cat(labels, 0),
        num_classes: train.num_classes,
        name,
    }
}

/// Every candidate's online and offline LiRA score (higher: more likely a member).
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub online: Vec<f64>,
    pub offline: Vec<f64>,
    /// Whether the variances were per candidate (else pooled).
    pub per_example_variance: bool,
}

/// The scores of the target's φ (`[candidate]`) given the shadows' φ (`[shadow][candidate]`)
/// and which shadows were IN for each candidate (`[candidate][shadow]`).
pub fn scores(
    target: &[f32],
    shadows: &[Vec<f32>],
    inside: &[Vec<bool>],
) -> Result<Scores, LiraError> {
    let length = |what, found: usize, expected: usize| {
        (found != expected).then_some(LiraError::Length {
            what,
            found,
            expected,
        })
    };
    let wrong = length("IN/OUT table", inside.len(), target.len())
        .or_else(|| {
            shadows
                .iter()
                .find_map(|phi| length("a shadow's confidences", phi.len(), target.len()))
        })
        .or_else(|| {
            inside
                .iter()
                .find_map(|row| length("a candidate's IN/OUT row", row.len(), shadows.len()))
        });
    if let Some(e) = wrong {
        return Err(e);
    }
    for (candidate, &value) in target.iter().enumerate() {
        if !value.is_finite() {
            return Err(LiraError::TargetNotFinite { candidate, value });
        }
    }
    for (shadow, phi) in shadows.iter().enumerate() {
        if let Some((candidate, &value)) = phi.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(LiraError::NotFinite {
                shadow,
                candidate,
                value,
            });
        }
    }
    let per_example = shadows.len() >= PER_EXAMPLE_VARIANCE;
    // Per candidate: (mean, sum of squared deviations, count) of the IN and the OUT shadows.
    let moments = |i: usize, want: bool| {
        let v: Vec<f64> = shadows
            .iter()
            .enumerate()
            .filter(|(k, _)| inside[i][*k] == want)
            .map(|(_, phi)| f64::from(phi[i]))
            .collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let ss = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
        (mean, ss, v.len())
    };
    let ins: Vec<_> = (0..target.len()).map(|i| moments(i, true)).collect();
    let outs: Vec<_> = (0..target.len()).map(|i| moments(i, false)).collect();
    let pooled = |m: &[(f64, f64, usize)]| {
        let (ss, n) = m.iter().fold((0.0, 0), |(s, n), x| (s + x.1, n + x.2));
        (ss / n.saturating_sub(m.len()).max(1) as f64).sqrt()
    };
    let (global_in, global_out) = (pooled(&ins), pooled(&outs));
    // A floor keeps a candidate every shadow scores alike from dividing by zero.
    let sd = |m: &(f64, f64, usize), global: f64| {
        let own = (m.1 / (m.2.saturating_sub(1)).max(1) as f64).sqrt();
        (if per_example { own } else { global }).max(1e-6)
    };
    let mut out = Scores {
        online: Vec::with_capacity(target.len()),
        offline: Vec::with_capacity(target.len()),
        per_example_variance: per_example,
    };
    for (i, &phi) in target.iter().enumerate() {
        let phi = f64::from(phi);
        let (mu_in, sd_in) = (ins[i].0, sd(&ins[i], global_in));
        let (mu_out, sd_out) = (outs[i].0, sd(&outs[i], global_out));
        let density = |mu: f64, s: f64| {
            Normal::new(mu, s)
                .map(|n| n.ln_pdf(phi))
                .unwrap_or(f64::NEG_INFINITY)
        };
        out.online
            .push(density(mu_in, sd_in) - density(mu_out, sd_out));
        out.offline.push((phi - mu_out) / sd_out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::membership::separation;
    use rand_distr::{Distribution, Normal as Gauss};

    #[test]
    fn every_candidate_is_in_for_exactly_half_of_the_shadows() {
        let plan = Plan::new(8, 3, 0, 50).unwrap();
        let table = plan.table();
        assert!(table.iter().all(|r| r.iter().filter(|&&b| b).count() == 4));
        // Every shadow is IN for exactly `count` candidates, its pair for the others.
        for k in 0..plan.shadows {
            assert_eq!(table.iter().filter(|r| r[k]).count(), plan.count);
            assert!(table.iter().all(|r| r[k] != r[k ^ 1]));
        }
        // Not every candidate gets the same half.
        assert!(table.iter().any(|r| r != &table[0]));
        assert_eq!(Plan::new(8, 3, 0, 50).unwrap().table(), table);
        assert_ne!(Plan::new(8, 4, 0, 50).unwrap().table(), table);
        for bad in [0, 1, 2, 3, MAX_SHADOWS + 2] {
            assert!(Plan::new(bad, 0, 0, 1).is_err(), "{bad} shadows");
        }
    }

    /// Images numbered by their pixel: training image i is i, test image i is 1000 + i.
    fn numbered(n: usize, base: f32) -> ImageSet {
        let device = burn::tensor::Device::flex();
        let values: Vec<f32> = (0..n).map(|i| base + i as f32).collect();
        ImageSet {
            images: burn::tensor::Tensor::<1>::from_floats(values.as_slice(), &device)
                .reshape([n, 1, 1, 1]),
            labels: burn::tensor::Tensor::zeros([n], &device),
            num_classes: 10,
            name: "numbered".into(),
        }
    }

    fn numbers(set: &ImageSet) -> Vec<u32> {
        let v: Vec<f32> = set.images.clone().into_data().try_to_vec::<f32>().unwrap();
        let mut v: Vec<u32> = v.into_iter().map(|x| x as u32).collect();
        v.sort();
        v
    }

    #[test]
    fn a_shadow_trains_on_its_in_candidates_and_is_evaluated_on_its_out_ones() {
        // Members are training images 2..6, non-members test images 0..4; the recipe trains
        // on the first 8 training images.
        let plan = Plan::new(4, 7, 2, 4).unwrap();
        let (train, test) = (numbered(20, 0.0), numbered(10, 1000.0));
        let table = plan.table();
        for k in 0..plan.shadows {
            let inside: Vec<bool> = table.iter().map(|row| row[k]).collect();
            let (fit, held_out) = plan.shadow_set(k, 8, &train, &test).unwrap();
            let candidate = |i: usize| {
                if i < 4 {
                    2 + i as u32
                } else {
                    1000 + i as u32 - 4
                }
            };
            let mut want_in: Vec<u32> = vec![0, 1, 6, 7];
            want_in.extend((0..8).filter(|&i| inside[i]).map(candidate));
            want_in.sort();
            let mut want_out: Vec<u32> = (0..8).filter(|&i| !inside[i]).map(candidate).collect();
            want_out.sort();
            assert_eq!(numbers(&fit), want_in, "shadow {k} trains on");
            assert_eq!(numbers(&held_out), want_out, "shadow {k} is evaluated on");
            assert_eq!(held_out.len(), 4);
        }
        // One member and one non-member: each shadow trains on one of them and is evaluated
        // on the other, with no empty part.
        let one = Plan::new(4, 7, 2, 1).unwrap();
        for k in 0..one.shadows {
            let (fit, held_out) = one.shadow_set(k, 3, &train, &test).unwrap();
            let (mut a, b) = (numbers(&fit), numbers(&held_out));
            assert_eq!((a.len(), b.len()), (3, 1), "shadow {k}");
            a.extend(b);
            a.sort();
            assert_eq!(a, vec![0, 1, 2, 1000]);
        }
        assert!(plan.shadow_set(0, 8, &numbered(5, 0.0), &test).is_err());
        assert!(plan.shadow_set(0, 8, &train, &numbered(3, 1000.0)).is_err());
    }

    /// Two candidates, four shadows, by hand: pooled variances (2 + 0.5) / 2 IN and
    /// (0.5 + 0.5) / 2 OUT; the expected values are scipy 1.17's `norm.logpdf` differences.
    #[test]
    fn the_scores_are_the_papers_by_hand() {
        let inside = vec![
            vec![true, false, true, false],
            vec![false, true, false, true],
        ];
        let shadows = vec![
            vec![2.0, 0.0],
            vec![0.0, 2.0],
            vec![4.0, 1.0],
            vec![1.0, 3.0],
        ];
        let s = scores(&[3.5, 0.0], &shadows, &inside).unwrap();
        assert!(!s.per_example_variance);
        for (got, want) in s.online.iter().zip([8.44185463406292, -2.708145365937078]) {
            assert!((got - want).abs() < 1e-12, "online {got} against {want}");
        }
        for (got, want) in s
            .offline
            .iter()
            .zip([4.242640687119285, -0.7071067811865475])
        {
            assert!((got - want).abs() < 1e-12, "offline {got} against {want}");
        }
        // Tables of the wrong size are refused, not indexed past.
        assert!(matches!(
            scores(&[3.5, 0.0, 1.0], &shadows, &inside),
            Err(LiraError::Length { .. })
        ));
        assert!(matches!(
            scores(&[3.5, 0.0], &shadows[..3], &inside),
            Err(LiraError::Length { .. })
        ));
    }

    /// Candidates whose IN confidence sits 1.5 above their OUT confidence (each candidate at
    /// its own level): the target's members are found, and a target that saw none of them
    /// scores at chance.
    #[test]
    fn the_likelihood_ratio_separates_members_only_when_there_are_some() {
        let plan = Plan::new(16, 1, 0, 1000).unwrap();
        let inside = plan.table();
        let mut rng = StdRng::seed_from_u64(7);
        let noise = Gauss::new(0.0, 1.0).unwrap();
        let level: Vec<f64> = (0..plan.candidates())
            .map(|_| 4.0 * noise.sample(&mut rng))
            .collect();
        let draw = |i: usize, member: bool, rng: &mut StdRng| {
            (level[i] + if member { 1.5 } else { 0.0 } + noise.sample(rng)) as f32
        };
        let shadows: Vec<Vec<f32>> = (0..plan.shadows)
            .map(|k| {
                (0..plan.candidates())
                    .map(|i| draw(i, inside[i][k], &mut rng))
                    .collect()
            })
            .collect();
        let target: Vec<f32> = (0..plan.candidates())
            .map(|i| draw(i, i < plan.count, &mut rng))
            .collect();
        let s = scores(&target, &shadows, &inside).unwrap();
        let split = |v: &[f64]| separation(&v[..plan.count], &v[plan.count..]);
        let online = split(&s.online);
        let offline = split(&s.offline);
        // Two unit Gaussians 1.5 apart: the ideal area is Φ(1.5/√2) = 0.856.
        assert!(online.auc > 0.80, "online {online:?}");
        assert!(offline.auc > 0.80, "offline {offline:?}");
        // The levels alone (what a global threshold sees) hide most of it.
        let raw: Vec<f64> = target.iter().map(|&x| f64::from(x)).collect();
        assert!(split(&raw).auc < 0.65);
        let unseen: Vec<f32> = (0..plan.candidates())
            .map(|i| draw(i, false, &mut rng))
            .collect();
        let s = scores(&unseen, &shadows, &inside).unwrap();
        let auc = split(&s.online).auc;
        assert!((auc - 0.5).abs() < 0.04, "a target that saw nothing: {auc}");
        let mut bad = shadows.clone();
        bad[3][5] = f32::NAN;
        assert!(matches!(
            scores(&target, &bad, &inside),
            Err(LiraError::NotFinite {
                shadow: 3,
                candidate: 5,
                ..
            })
        ));
    }
}
