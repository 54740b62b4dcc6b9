//! Black-box tests of the wxbind API: HTTP in, HTTP and database rows out.
mod batch;
mod binding;
mod delivery;
mod deployment;
mod events;
mod hijack;
mod login;
mod messages;
mod miniprogram;
mod ops;
mod outage;
mod roles;
mod sandbox;
mod session;
mod templates;
mod token;
mod unionid;
