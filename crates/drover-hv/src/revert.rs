//! Undo steps for multi-step host changes: each step pushes its undo, and dropping the guard
//! without [`Revert::commit`] runs them in reverse, so a failure leaves nothing behind.

#[derive(Default)]
pub struct Revert {
    undo: Vec<Box<dyn FnOnce() + Send>>,
}

impl Revert {
    pub fn new() -> Self {
        Self { undo: Vec::new() }
    }

    pub fn push(&mut self, step: impl FnOnce() + Send + 'static) {
        self.undo.push(Box::new(step));
    }

    /// Keeps the changes.
    pub fn commit(mut self) {
        self.undo.clear();
    }
}

impl Drop for Revert {
    fn drop(&mut self) {
        while let Some(step) = self.undo.pop() {
            step();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn drop_undoes_in_reverse_and_commit_keeps() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut revert = Revert::new();
            for step in 1..=3 {
                let log = log.clone();
                revert.push(move || log.lock().expect("not poisoned").push(step));
            }
        }
        assert_eq!(*log.lock().expect("not poisoned"), vec![3, 2, 1]);

        let mut revert = Revert::new();
        let kept = log.clone();
        revert.push(move || kept.lock().expect("not poisoned").push(9));
        revert.commit();
        assert_eq!(log.lock().expect("not poisoned").len(), 3);
    }
}
