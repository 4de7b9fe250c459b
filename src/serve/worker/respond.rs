//! Answering requests: one forward pass per batch, then per request the detectors and the
//! response policy, the extraction ledger, and what is remembered for feedback.

use super::*;

impl Worker {
    /// One forward pass over every plain request of the batch.
    pub(super) fn predict(&mut self, requests: Vec<(String, Inputs, Reply<Answer>)>) {
        let all = Inputs::concat(requests.iter().map(|r| &r.1));
        let n = all.len();
        self.metrics.batch_size.observe(n as f64);
        let result = self.forward(&all);
        let (primary, answers) = match result {
            Ok(v) => v,
            Err(e) => {
                for (_, _, reply) in requests {
                    let _ = reply.send(Err(ServeError::Model(e.to_string())));
                }
                return;
            }
        };
        let name = self.loaded.models[self.active].name();
        self.metrics
            .inputs
            .get_or_create(&labels(&[("model", &name)]))
            .inc_by(n as u64);
        let mut start = 0;
        let mut answers_out = Vec::with_capacity(requests.len());
        for (client, inputs, reply) in requests {
            let k = inputs.len();
            let answer = self.respond(&client, &inputs, start, &primary, &answers);
            start += k;
            answers_out.push((reply, answer));
        }
        // A drift window closed by this batch is on disk before its answers go out.
        let drift = match primary.summary {
            Some(s) => self.add_drift(s, n),
            None => Ok(()),
        };
        let interval = self.interval();
        self.loaded.ledger.close_until(interval);
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            st.inputs += n as u64;
            st.batches += 1;
        }
        for (reply, answer) in answers_out {
            let answer = match (&drift, answer) {
                (Err(e), _) => Err(ServeError::Model(format!("the incident log failed: {e}"))),
                (Ok(()), a) => a,
            };
            let _ = reply.send(answer);
        }
    }

    /// The primary's forward pass (with detectors and drift features) and, when a backup is
    /// active, the backup's answers.
    pub(super) fn forward(&self, all: &Inputs) -> Result<(Forward, Forward), ServeError> {
        let l = &self.loaded;
        let job = ForwardJob {
            fitted: l.fitted.as_ref().map(|f| &f.0),
            drift: l.reference.is_some(),
        };
        let primary = l.models[0].run(all, job, &self.device)??;
        let answers = if self.active == 0 {
            primary.clone()
        } else {
            let job = ForwardJob {
                fitted: None,
                drift: false,
            };
            l.models[self.active].run(all, job, &self.device)??
        };
        Ok((primary, answers))
    }

    pub(super) fn interval(&self) -> u64 {
        (self.started.elapsed().as_secs_f64() / self.cfg.monitor.interval_seconds) as u64
    }

    /// One request's answer from the batch's rows `start..`: detectors and the response policy,
    /// the extraction ledger, incidents, then the answer.
    pub(super) fn respond(
        &mut self,
        client: &str,
        inputs: &Inputs,
        start: usize,
        primary: &Forward,
        answers: &Forward,
    ) -> Result<Answer, ServeError> {
        let id = self.request_id();
        let policy = self.cfg.policy.clone();
        let mut outcomes = Vec::with_capacity(inputs.len());
        let mut flagged = Vec::new();
        let mut worst = Severity::Info;
        for i in 0..inputs.len() {
            let row = start + i;
            let detector = self.detector_outcome(primary, row);
            let severity = detector.as_ref().map_or("none", |d| d.severity.as_str());
            let blocked = severity == "high" && policy.block_adversarial;
            if severity != "none" {
                let s = if severity == "high" {
                    Severity::High
                } else {
                    Severity::Warning
                };
                worst = worst.max(s);
                let d = detector.as_ref().expect("a severity comes from a detector");
                flagged.push(json!({
                    "input": i,
                    "fused_p_value": d.fused_p_value,
                    "alarms": d.scores.iter().filter(|s| s.2).map(|s| s.0.clone()).collect::<Vec<_>>(),
                    "invalid": d.invalid,
                    "blocked": blocked,
                }));
            }
            let decision = answers.decision[row];
            let classes = self.loaded.models[self.active].num_classes();
            outcomes.push(Outcome {
                class: (!blocked && (decision as usize) < classes).then_some(decision as usize),
                probabilities: if blocked {
                    Vec::new()
                } else {
                    answers.probabilities[row].clone()
                },
                detector,
                blocked,
                certificate: None,
            });
        }
        let blocked = outcomes.iter().filter(|o| o.blocked).count();
        if !flagged.is_empty() {
            let fpr = self.loaded.fitted.as_ref().map_or(0.0, |f| f.0.header.fpr);
            let min_p = flagged
                .iter()
                .filter_map(|f| f["fused_p_value"].as_f64())
                .fold(1.0, f64::min);
            let action = if blocked > 0 {
                format!("blocked {blocked} of {} inputs", inputs.len())
            } else {
                "flagged".into()
            };
            self.raise(
                Alert::new(
                    worst,
                    "adversarial_input",
                    format!(
                        "{} of {} inputs of request {id} flagged by the detectors",
                        flagged.len(),
                        inputs.len()
                    ),
                )
                .client(client)
                .statistic(
                    "fused_p_value",
                    min_p,
                    if worst == Severity::High {
                        policy.block_p
                    } else {
                        fpr
                    },
                )
                .action(&action)
                .evidence(json!({
                    "request_id": id,
                    "flagged": flagged.len(),
                    "blocked": blocked,
                    // At most EVIDENCE inputs per entry, so a flood cannot bloat the log.
                    "inputs": &flagged[..flagged.len().min(EVIDENCE)],
                })),
            )?;
            self.metrics
                .blocked
                .get_or_create(&labels(&[("reason", "adversarial_input")]))
                .inc_by(blocked as u64);
        }
        self.watch_extraction(client, inputs, start, answers, &id)?;
        self.remember(client, &id, inputs, start, answers);
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            st.blocked_inputs += blocked as u64;
            st.detector_alarms += flagged.len() as u64;
        }
        Ok(Answer {
            output: self.clients.output(client),
            request_id: id,
            model: self.loaded.models[self.active].name(),
            outcomes,
        })
    }

    pub(super) fn detector_outcome(
        &self,
        primary: &Forward,
        row: usize,
    ) -> Option<DetectorOutcome> {
        let (fitted, thresholds) = self.loaded.fitted.as_ref()?;
        let s = primary.scores.as_ref()?;
        let fused = s.fused[row];
        let invalid = s.invalid[row];
        let alarm = p_alarm(fused, fitted.header.fpr) || invalid.is_some();
        let high = invalid.is_some() || f64::from(fused) <= self.cfg.policy.block_p;
        self.metrics.fused_p_value.observe(f64::from(fused));
        let scores: Vec<(String, f32, bool)> = fitted
            .header
            .detectors
            .iter()
            .enumerate()
            .map(|(d, kind)| {
                let v = s.scores[d][row];
                (
                    kind.name().to_string(),
                    v,
                    crate::detect::score::alarm(v, thresholds[d]),
                )
            })
            .collect();
        for (name, _, a) in &scores {
            if *a {
                self.metrics
                    .detector_alarms
                    .get_or_create(&labels(&[("detector", name)]))
                    .inc();
            }
        }
        if alarm {
            let which = if invalid.is_some() {
                "invalid"
            } else {
                "fused"
            };
            self.metrics
                .detector_alarms
                .get_or_create(&labels(&[("detector", which)]))
                .inc();
        }
        Some(DetectorOutcome {
            fused_p_value: fused,
            scores,
            alarm,
            severity: if high {
                "high"
            } else if alarm {
                "warning"
            } else {
                "none"
            }
            .into(),
            invalid: invalid.map(|v| v.name().to_string()),
        })
    }

    /// Feeds the client's queries to the extraction ledger; a new alarm escalates the client.
    pub(super) fn watch_extraction(
        &mut self,
        client: &str,
        inputs: &Inputs,
        start: usize,
        answers: &Forward,
        id: &str,
    ) -> Result<(), ServeError> {
        let interval = self.interval();
        let model = &self.loaded.models[0];
        let mut alarms = Default::default();
        for i in 0..inputs.len() {
            let row = model.ledger_row(inputs, i);
            let class = answers.decision[start + i].max(0) as usize;
            // A record without network features has no vector for PRADA: it still counts.
            alarms = if row.is_empty() {
                self.loaded.ledger.count(client, interval)
            } else {
                self.loaded
                    .ledger
                    .observe(client, &row, class, (0.0, 1.0), interval)
            }
            .map_err(|e| ServeError::BadInput(e.to_string()))?;
        }
        let crate::detect::extraction::Alarms {
            prada,
            rate,
            volume,
        } = alarms;
        let queries = self
            .loaded
            .ledger
            .clients
            .get(client)
            .map_or(0, |c| c.queries);
        let checks = [
            (
                "prada",
                prada.map(|(q, w)| (w, self.loaded.ledger.prada.delta, q)),
            ),
            (
                "rate",
                rate.map(|iv| {
                    (
                        iv as f64,
                        self.loaded.ledger.cusum.as_ref().map_or(f64::NAN, |c| c.h),
                        queries,
                    )
                }),
            ),
            (
                "volume",
                volume.map(|q| {
                    (
                        q as f64,
                        self.loaded.ledger.max_queries.unwrap_or(0) as f64,
                        q,
                    )
                }),
            ),
            ("persisted", Some((queries as f64, f64::NAN, queries))),
        ];
        for (check, fired) in checks {
            let Some((value, threshold, at)) = fired else {
                continue;
            };
            let Some(action) = self
                .clients
                .escalate(client, check, queries, &self.cfg.policy)
            else {
                continue;
            };
            self.metrics
                .extraction_alarms
                .get_or_create(&labels(&[("check", check)]))
                .inc();
            let statistic = match check {
                "prada" => "shapiro_wilk_w",
                "rate" => "cusum_alarm_interval",
                _ => "queries",
            };
            let severity = if action == "blocked" {
                Severity::Critical
            } else {
                Severity::High
            };
            self.raise(
                Alert::new(
                    severity,
                    "extraction",
                    format!("client {client} looks like a model-extraction attack ({check} check, query {at}); {action}"),
                )
                .client(client)
                .statistic(statistic, value, threshold)
                .action(&action)
                .evidence(json!({ "request_id": id, "check": check, "queries": queries, "alarm_at_query": at })),
            )?;
        }
        Ok(())
    }

    /// Keeps a request's inputs and answers for its feedback; at most `monitor.remember`
    /// inputs in all, the oldest dropped first.
    pub(super) fn remember(
        &mut self,
        client: &str,
        id: &str,
        inputs: &Inputs,
        start: usize,
        answers: &Forward,
    ) {
        let decisions = answers.decision[start..start + inputs.len()].to_vec();
        self.remembered_inputs += inputs.len();
        self.remembered.insert(
            id.to_string(),
            Remembered {
                client: client.to_string(),
                inputs: inputs.clone(),
                decisions,
            },
        );
        self.order.push_back(id.to_string());
        while self.remembered_inputs > self.cfg.monitor.remember
            || self.order.len() > self.cfg.monitor.remember
        {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(r) = self.remembered.remove(&old) {
                self.remembered_inputs -= r.inputs.len();
            }
        }
    }

    /// CERTIFY on each input through the active model.
    pub(super) fn smooth(&mut self, client: &str, inputs: Inputs) -> Result<Answer, ServeError> {
        let s = self.cfg.smooth.clone();
        if inputs.len() > s.max_inputs {
            return Err(ServeError::BadInput(format!(
                "a smoothed request holds at most {} inputs (smooth.max_inputs); this one holds {}",
                s.max_inputs,
                inputs.len()
            )));
        }
        // The same checks as any request (detectors, blocking, the extraction ledger), then
        // CERTIFY on the inputs that were not blocked.
        let (primary, answers) = self.forward(&inputs)?;
        let mut answer = self.respond(client, &inputs, 0, &primary, &answers)?;
        if let Some(summary) = primary.summary {
            self.add_drift(summary, inputs.len())?;
        }
        let keep: Vec<usize> = (0..inputs.len())
            .filter(|i| !answer.outcomes[*i].blocked)
            .collect();
        if keep.is_empty() {
            return Ok(answer);
        }
        let base = self.next * 1024;
        let job = SmoothJob {
            sigma: s.sigma,
            n0: s.n0,
            n: s.n,
            alpha: s.alpha,
            seed: 0x5e7e,
            ids: keep.iter().map(|i| base + *i as u64).collect(),
            batch: self.cfg.batch.max_batch.max(100),
        };
        let certs =
            self.loaded.models[self.active].run(&inputs.select(&keep), job, &self.device)?;
        for (i, c) in keep.into_iter().zip(certs) {
            let o = &mut answer.outcomes[i];
            o.class = c.class;
            o.probabilities.clear();
            o.certificate = Some(c);
        }
        Ok(answer)
    }
}
