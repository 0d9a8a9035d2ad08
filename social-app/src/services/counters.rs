//! The counters service: named groups of integer counters over a [`CounterStore`] (Redis
//! when configured, the embedded store otherwise).

use std::sync::Arc;

use social_store::CounterStore;
use tonic::{Request, Response, Status};

use crate::pb::{self, counters_server::Counters};
use crate::rpc::{invalid, store_status};

/// The service.
pub struct CountersService {
    store: Arc<dyn CounterStore>,
}

impl CountersService {
    /// Over `store`.
    pub fn new(store: Arc<dyn CounterStore>) -> Self {
        CountersService { store }
    }
}

fn name(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() {
        return Err(invalid(field, "required"));
    }
    if v.len() > 200 || v.chars().any(char::is_control) {
        return Err(invalid(field, "at most 200 printable characters"));
    }
    Ok(())
}

#[tonic::async_trait]
impl Counters for CountersService {
    async fn incr(&self, r: Request<pb::IncrRequest>) -> Result<Response<pb::IncrReply>, Status> {
        let r = r.into_inner();
        name("counter", &r.counter)?;
        name("field", &r.field)?;
        let value = self
            .store
            .incr(&r.counter, &r.field, r.by)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::IncrReply { value }))
    }

    async fn get(
        &self,
        r: Request<pb::CounterRequest>,
    ) -> Result<Response<pb::CounterReply>, Status> {
        let r = r.into_inner();
        name("counter", &r.counter)?;
        let fields = self.store.get(&r.counter).await.map_err(store_status)?;
        Ok(Response::new(pb::CounterReply {
            fields: fields.into_iter().collect(),
        }))
    }

    async fn reset(&self, r: Request<pb::ResetRequest>) -> Result<Response<pb::Empty>, Status> {
        let r = r.into_inner();
        name("counter", &r.counter)?;
        name("field", &r.field)?;
        self.store
            .reset(&r.counter, &r.field)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::Empty {}))
    }
}
