//! Weight initialisation from our seeded generator, and AdamW.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use crate::model::SeededRng;

/// Sets every weight from our seeded generator: matrices and kernels He-uniform, biases zero,
/// attention projections zero (the mask starts uniform); batch-norm statistics keep their
/// constant starts.
pub fn seeded_init(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    let mut rng = SeededRng::new(seed);
    let vars = sorted_vars(varmap);
    for (name, var) in vars {
        let dims = var.dims().to_vec();
        let value = if name.contains("attention")
            || (dims.len() == 1 && name.ends_with(".bias") && !name.contains("bn"))
        {
            Some(Tensor::zeros(dims.as_slice(), DType::F32, &Device::Cpu)?)
        } else if dims.len() >= 2 {
            let fan_in: usize = dims[1..].iter().product();
            let bound = (6.0 / fan_in.max(1) as f64).sqrt();
            let n: usize = dims.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect();
            Some(Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?)
        } else {
            None
        };
        if let Some(v) = value {
            var.set(&v)?;
        }
    }
    Ok(())
}

pub fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// AdamW (decoupled weight decay on matrices and kernels only), with its moments kept by name so
/// that a checkpoint can restore them.
pub struct AdamW {
    pub(super) vars: Vec<(String, Var, Tensor, Tensor)>,
    pub(super) step: usize,
    weight_decay: f64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl AdamW {
    pub fn new(varmap: &VarMap, weight_decay: f64) -> candle_core::Result<Self> {
        let vars = sorted_vars(varmap)
            .into_iter()
            .filter(|(name, _)| !name.contains("running_"))
            .map(|(name, var)| {
                let zeros = var.zeros_like()?;
                Ok((name, var, zeros.clone(), zeros))
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            vars,
            step: 0,
            weight_decay,
        })
    }

    pub fn step(
        &mut self,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
    ) -> candle_core::Result<()> {
        self.step += 1;
        let scale_m = 1.0 / (1.0 - BETA1.powi(self.step as i32));
        let scale_v = 1.0 / (1.0 - BETA2.powi(self.step as i32));
        for (_, var, m, v) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Gradients remember the graph they came from; the moments must not, or every
            // step's graph would stay alive through them.
            let g = g.detach();
            *m = ((&*m * BETA1)? + (&g * (1.0 - BETA1))?)?.detach();
            *v = ((&*v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?.detach();
            let update = ((&*m * scale_m)? / ((&*v * scale_v)?.sqrt()? + EPS)?)?;
            let decay = if var.rank() >= 2 {
                lr * self.weight_decay
            } else {
                0.0
            };
            let next = ((var.as_tensor() * (1.0 - decay))? - (update * lr)?)?;
            var.set(&next)?;
        }
        Ok(())
    }

    pub(super) fn moments(&self) -> impl Iterator<Item = (String, Tensor)> + '_ {
        self.vars.iter().flat_map(|(name, _, m, v)| {
            [
                (format!("adam.m.{name}"), m.clone()),
                (format!("adam.v.{name}"), v.clone()),
            ]
        })
    }
}

/// Every variable's current value, by name.
pub fn var_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    sorted_vars(varmap)
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().clone()))
        .collect()
}
