//! Loading what the service serves: the models (signatures checked), the detectors, the drift
//! reference and its online detector, the ledger settings, and the checks that bind them.

use super::*;

pub(super) fn load(cfg: &ServeConfig, device: &Chosen) -> Result<Loaded, ServeError> {
    let key = cfg.verify_key.as_deref();
    let mut models = vec![Served::open(&cfg.model.primary, key, device)?];
    for b in &cfg.model.backups {
        models.push(Served::open(b, key, device)?);
    }
    let primary = &models[0];
    for m in &models[1..] {
        if m.num_classes() != primary.num_classes() || m.reads_images() != primary.reads_images() {
            return Err(ServeError::Config(format!(
                "backup {} does not do the primary's task ({} classes, {} inputs)",
                m.path.display(),
                primary.num_classes(),
                if primary.reads_images() {
                    "image"
                } else {
                    "record"
                }
            )));
        }
    }
    let fitted = match &cfg.model.detectors {
        Some(p) => {
            let f = Fitted::load(p, &device.device)?;
            check_opened(p, &f.header.model_sha256, &primary.opened)?;
            check_block_p(&f, cfg.policy.block_p, p, device)?;
            let t = thresholds(&f)?;
            Some((f, t))
        }
        None => None,
    };
    let reference = match &cfg.model.drift_reference {
        Some(p) => {
            let r = Reference::load(p, &device.device)?;
            check_opened(p, &r.header.model_sha256, &primary.opened)?;
            Some(r)
        }
        None => None,
    };
    let m = &cfg.monitor;
    let online = match (&reference, m.online_window) {
        (Some(r), w) if w > 0 => {
            let bootstraps = (4.0 * m.online_ert).ceil() as usize;
            Some(
                OnlineMmd::fit(
                    r.summary.features.clone(),
                    w,
                    m.online_ert,
                    bootstraps,
                    0x0d1f7,
                )
                .map_err(|e| ServeError::Config(format!("monitor.online_window: {e}")))?,
            )
        }
        _ => None,
    };
    let ledger = match &cfg.model.ledger {
        Some(p) => {
            let l = LedgerFile::load(p)?;
            check_opened(p, &l.model_sha256, &primary.opened)?;
            l.ledger()
        }
        None => Ledger::new(Prada::default()),
    };
    Ok(Loaded {
        models,
        fitted,
        reference,
        online,
        ledger,
    })
}

/// Refuses a `policy.block_p` below the smallest fused p-value the detectors can give (every
/// detector's conformal p-value at its floor 1/(n + 1)): no input could ever be blocked.
pub(super) fn check_block_p(
    f: &Fitted,
    block_p: f64,
    path: &std::path::Path,
    device: &Chosen,
) -> Result<(), ServeError> {
    let floors: Vec<Tensor<1>> = f
        .calibrations
        .iter()
        .map(|c| Tensor::<1>::from_floats([1.0 / (c.scores.len() as f32 + 1.0)], &device.device))
        .collect();
    let fused = crate::detect::calibrate::fuse(f.header.fusion, &floors);
    let floor = f64::from(crate::detect::host_floats(fused, "fused p-value floor")?[0]);
    if block_p * (1.0 + 1e-6) < floor {
        return Err(ServeError::Config(format!(
            "policy.block_p {block_p}: the detectors in {} cannot give a fused p-value below {floor:.6} ({} detectors, {} calibration examples), so no input would ever be blocked; set block_p to at least {floor:.6}, or calibrate on more examples",
            path.display(),
            f.calibrations.len(),
            f.calibrations.first().map_or(0, |c| c.scores.len())
        )));
    }
    Ok(())
}

/// Checks that the detectors can score with the primary (one forward pass on one probe input).
pub(super) fn check_detectors(l: &Loaded, device: &Chosen) -> Result<(), ServeError> {
    let Some((fitted, _)) = &l.fitted else {
        return Ok(());
    };
    let primary = &l.models[0];
    if !primary.reads_images() {
        return Ok(());
    }
    let d: usize = crate::model::image::IMAGE_SHAPE.iter().product();
    let probe = Inputs::Images {
        values: vec![0.5; d],
        n: 1,
    };
    primary.run(&probe, CheckJob { fitted }, device)??;
    Ok(())
}

/// Where the service's own files are, for `Outputs` checks.
pub fn model_files(cfg: &ServeConfig) -> Vec<PathBuf> {
    let m = &cfg.model;
    let mut v = vec![m.primary.clone()];
    v.extend(m.backups.iter().cloned());
    v.extend(m.detectors.iter().cloned());
    v.extend(m.drift_reference.iter().cloned());
    v.extend(m.ledger.iter().cloned());
    v
}
