//! An async QMP client (to be written).

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("placeholder")]
    Placeholder,
}
