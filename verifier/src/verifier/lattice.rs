//! The lattice vocabulary shared by every abstract domain of the verifier.
//!
//! Each domain is a set of concrete values described by a small value type.
//! `le` is inclusion of the described sets (semantic, not structural), `join`
//! an upper bound of both, `meet` the intersection, or `None` when it is empty
//! (bottom is not representable in the domains themselves; a path whose state
//! meets to bottom is infeasible and is dropped).

/// A join-semilattice with a top element and a partial meet.
pub trait Lattice: Sized {
    /// The element describing every value.
    fn top() -> Self;
    /// An upper bound of `self` and `other` (`self.le(&j) && other.le(&j)`).
    fn join(&self, other: &Self) -> Self;
    /// A lower bound of both, `None` when their intersection is empty.
    fn meet(&self, other: &Self) -> Option<Self>;
    /// Whether every value described by `self` is described by `other`.
    fn le(&self, other: &Self) -> bool;
}
