//! wxbind: bind website accounts to a WeChat Official Account and send them template messages.
pub mod auth;
pub mod batch;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod sandbox;
pub mod session;
pub mod startup;
pub mod telemetry;
pub mod wechat;
pub mod worker;
