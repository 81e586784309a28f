//! Calling the upstream REST APIs: one shared HTTP core (`http`), and one typed
//! client per provider with a method per REST endpoint (`sutro`, `xai`).

mod attempt;
mod attempt_span;
pub mod base_url;
pub mod budget;
pub mod http;
pub mod lenient;
pub mod relay;
pub mod reply;
pub mod sutro;
pub mod sutro_models;
pub mod xai;
pub mod xai_models;
