//! Drift: the online MMD detector over a sliding window, and the tumbling-window tests against
//! the saved reference.

use super::*;

impl Worker {
    /// Adds a batch's drift features to the window; tests a full window.
    /// Adds a batch's drift features to the window; tests a full window (its incident is
    /// written before this returns).
    pub(super) fn add_drift(&mut self, s: Summary, n: usize) -> Result<(), ServeError> {
        self.online_drift(&s.features)?;
        self.drift.push(s);
        self.drift_n += n;
        if self.drift_n < self.cfg.monitor.drift_window {
            return Ok(());
        }
        let parts = std::mem::take(&mut self.drift);
        let size = std::mem::take(&mut self.drift_n);
        let Some(reference) = &self.loaded.reference else {
            return Ok(());
        };
        let mut counts = vec![0u64; reference.summary.counts.len()];
        for p in &parts {
            for (c, v) in counts.iter_mut().zip(&p.counts) {
                *c += v;
            }
        }
        let window = Summary {
            penultimate: parts[0].penultimate,
            features: Tensor::cat(parts.iter().map(|p| p.features.clone()).collect(), 0),
            entropy: Tensor::cat(parts.iter().map(|p| p.entropy.clone()).collect(), 0),
            counts,
        };
        let tests = Tests {
            feature_test: reference.header.feature_test,
            permutations: reference.header.permutations,
            alpha: self.cfg.monitor.drift_alpha,
            seed: self.metrics.drift_windows.get(),
        };
        let c = match compare(&reference.summary, &window, &tests) {
            Ok(c) => c,
            Err(e) => {
                return self.raise(Alert::new(
                    Severity::Warning,
                    "drift_error",
                    format!("the drift test failed: {e}"),
                ));
            }
        };
        let p = bonferroni(&[
            c.mmd.p_value,
            c.features.p_value,
            c.entropy_ks.p_value,
            c.chi.p_value,
        ]);
        self.metrics.drift_windows.inc();
        self.metrics.drift_p_value.set(p);
        if p <= tests.alpha {
            self.metrics.drift_alarms.inc();
            self.raise(
                Alert::new(
                    Severity::Warning,
                    "drift",
                    format!("the last {size} inputs differ from the reference (p = {p:.2e})"),
                )
                .statistic("bonferroni_p_value", p, tests.alpha)
                .evidence(json!({
                    "window": size,
                    "mmd": { "statistic": c.mmd.statistic, "p_value": c.mmd.p_value },
                    "features": { "test": format!("{:?}", c.features.test), "drifted": c.features.drifted, "of": c.features.features, "p_value": c.features.p_value },
                    "entropy_ks": { "statistic": c.entropy_ks.statistic, "p_value": c.entropy_ks.p_value },
                    "classes_chi_square": { "statistic": c.chi.statistic, "p_value": c.chi.p_value },
                    "space": c.space,
                })),
            )?;
        }
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.last_drift_p_value = Some(p);
        Ok(())
    }

    /// The online MMD detector over the sliding window of the last W inputs: the statistic at
    /// every input of the batch against the step's bootstrap threshold (Alibi Detect's
    /// `MMDDriftOnline`); an alarm is an incident and restarts the detector.
    pub(super) fn online_drift(&mut self, features: &Tensor<2>) -> Result<(), ServeError> {
        let Some(online) = &self.loaded.online else {
            return Ok(());
        };
        let w = online.window;
        let b = features.dims()[0];
        let (stream, kept) = match self.online_tail.take() {
            Some(t) => {
                let k = t.dims()[0];
                (Tensor::cat(vec![t, features.clone()], 0), k)
            }
            None => (features.clone(), 0),
        };
        let t = stream.dims()[0];
        let seen_before = self.online_seen;
        self.online_seen += b;
        self.online_tail = Some(
            stream
                .clone()
                .narrow(0, t.saturating_sub(w - 1), t.min(w - 1)),
        );
        if t < w {
            return Ok(());
        }
        let stats = match online.statistics(stream.clone()) {
            Ok(s) => s,
            Err(e) => {
                return self.raise(Alert::new(
                    Severity::Warning,
                    "drift_error",
                    format!("the online drift test failed: {e}"),
                ));
            }
        };
        let last = online.thresholds.last().copied().unwrap_or(f64::INFINITY);
        // stats[i] ends at stream row w + i, the input numbered (from the last reset)
        // seen_before − kept + w + i; its threshold is the one for that step.
        let alarm = stats.iter().enumerate().find_map(|(i, s)| {
            let step = seen_before + w + i - kept;
            let threshold = online.thresholds.get(step - w).copied().unwrap_or(last);
            (*s > threshold).then_some((step, *s, threshold))
        });
        if let Some((step, stat, threshold)) = alarm {
            let (window, ert) = (online.window, online.ert);
            // The detector restarts after the alarm: the inputs after the alarm's window
            // (at most W − 1 of them) start its next window.
            let end = step + kept - seen_before;
            let after = t - end;
            let keep = after.min(w - 1);
            self.online_tail = (keep > 0).then(|| stream.narrow(0, t - keep, keep));
            self.online_seen = keep;
            self.metrics.drift_alarms.inc();
            self.raise(
                Alert::new(
                    Severity::Warning,
                    "drift",
                    format!("online MMD over the last {window} inputs crossed its threshold at input {step} since the detector started"),
                )
                .statistic("online_mmd", stat, threshold)
                .evidence(json!({ "detector": "online_mmd", "window": window, "ert": ert, "step": step })),
            )?;
        }
        Ok(())
    }
}
