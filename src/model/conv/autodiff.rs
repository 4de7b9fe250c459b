//! The convolution as one node of Burn's autodiff graph on flex: the forward is
//! [`kernel::forward`], and the backward gives
//! - the input's gradient from [`kernel::input_grad`] (the weight's transpose times the output's
//!   gradient, folded back onto the input);
//! - the weight's and bias's gradients from [`kernel::weight_grad`];
//!
//! each only when its tensor is tracked (an attack needs the input's, training the weights').

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;

use super::{Geometry, flex_f32, kernel};

/// A float tensor of `Autodiff<Flex>` (Burn's default, no gradient checkpointing).
pub type Tracked = FloatTensor<Autodiff<Flex, NoCheckpointing>>;

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    /// The input and weight (contiguous) and the geometry.
    type State = (FlexTensor, FlexTensor, Geometry);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, w, g) = ops.state;
        let dy_data: &[f32] = dy.storage();
        if let Some(node) = node_x {
            let dx = kernel::input_grad(dy_data, w.storage(), &g);
            grads.register::<Flex>(node.id, flex_f32(dx, [g.n, g.c_in, g.h, g.w]));
        }
        if node_w.is_some() || node_b.is_some() {
            let (dw, db) = kernel::weight_grad(x.storage(), dy_data, &g, node_b.is_some());
            if let Some(node) = node_w {
                let shape = [g.c_out, g.c_in, g.kh, g.kw];
                grads.register::<Flex>(node.id, flex_f32(dw, shape));
            }
            if let Some(node) = node_b {
                grads.register::<Flex>(node.id, flex_f32(db, [g.c_out]));
            }
        }
    }
}

/// The convolution of `x` with `weight` plus `bias` (all f32 on flex, contiguous or not), as a
/// node whose backward is [`ConvBackward`].
pub fn conv2d(x: Tracked, weight: Tracked, bias: Tracked, g: Geometry) -> Tracked {
    let prep = ConvBackward
        .prepare::<NoCheckpointing>([x.node(), weight.node(), bias.node()])
        .compute_bound()
        .stateful();
    let xp = x.primitive().to_contiguous();
    let wp = weight.primitive().to_contiguous();
    let bp = bias.primitive().to_contiguous();
    let y = kernel::forward(xp.storage(), wp.storage(), Some(bp.storage()), &g);
    let y = flex_f32(y, [g.n, g.c_out, g.oh, g.ow]);
    match prep {
        OpsKind::Tracked(prep) => prep.finish((xp, wp, g), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
