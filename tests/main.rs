//! Integration tests against real servers: throwaway `mariadbd` instances
//! and an in-process S3 server (see ci/testkit). One binary, many modules.

mod accounts;
mod archive;
mod archive_handoff;
mod archive_signing;
mod archive_stage;
mod common;
mod consistency;
mod credentials;
mod encode;
mod errors;
mod examples;
mod faults;
mod fidelity;
mod interop;
mod load;
mod memory;
mod newcomer;
mod parquet;
mod point_in_time;
mod provision_stream;
mod replica_source;
mod roundtrip;
mod row_encoder;
mod s3;
mod serve_clients;
mod serve_limits;
mod serve_tls;
mod split;
mod stage_ops;
mod throttle;
mod tls;
mod workers;
