//! Quota allocation for Check: the live counters of every quota handler (kept across config
//! updates while a handler's params stay the same) and the answer per requested quota.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_proto::google::rpc::Status as RpcStatus;
use mesh_proto::istio::mixer::v1::check_request::QuotaParams;
use mesh_proto::istio::mixer::v1::check_response::QuotaResult;
use parking_lot::Mutex;

use crate::adapter::Adapter;
use crate::adapter::memquota::MemQuota;
use crate::adapter::quota::{Grant, Limits};
use crate::adapter::redisquota::{self, RedisQuota};
use crate::check::{QuotaCall, proto_duration, referenced};
use crate::config::Policy;

#[derive(Debug, Clone)]
enum Backend {
    Mem(Limits, Arc<MemQuota>),
    Redis(redisquota::Params, Arc<RedisQuota>),
}

/// The counters of every quota handler, by handler (`name.adapter.namespace`).
#[derive(Debug, Clone, Default)]
pub struct QuotaBackends {
    handlers: Arc<Mutex<HashMap<String, Backend>>>,
}

impl QuotaBackends {
    /// The backend of `handler`, made anew when its params changed.
    fn backend(&self, handler: &str, adapter: &Adapter) -> Option<Backend> {
        let mut all = self.handlers.lock();
        let same = match (all.get(handler), adapter) {
            (Some(Backend::Mem(l, _)), Adapter::MemQuota(p)) => l == p,
            (Some(Backend::Redis(r, _)), Adapter::RedisQuota(p)) => r == p,
            _ => false,
        };
        if !same {
            let fresh = match adapter {
                Adapter::MemQuota(p) => Backend::Mem(p.clone(), Arc::new(MemQuota::new())),
                Adapter::RedisQuota(p) => match RedisQuota::new(p) {
                    Ok(q) => Backend::Redis(p.clone(), Arc::new(q)),
                    Err(e) => {
                        tracing::warn!(handler, error = %e, "redisquota handler not usable");
                        return None;
                    }
                },
                _ => return None,
            };
            all.insert(handler.to_string(), fresh);
        }
        all.get(handler).cloned()
    }

    /// Makes every call of `calls` and answers each requested quota in `requested` that a call
    /// serves (several calls for one quota: the smallest grant wins).
    pub async fn allocate(
        &self,
        policy: &Policy,
        calls: &[QuotaCall],
        requested: &HashMap<String, QuotaParams>,
        deduplication_id: &str,
    ) -> HashMap<String, QuotaResult> {
        let mut out: HashMap<String, QuotaResult> = HashMap::new();
        for call in calls {
            let Some(params) = requested.get(&call.quota) else {
                continue;
            };
            let Some(action) = policy
                .rules
                .get(call.rule)
                .and_then(|r| r.actions.get(call.action))
            else {
                continue;
            };
            // Istio's dedup id for a quota: the request's id and the quota name.
            let dedup = if deduplication_id.is_empty() {
                String::new()
            } else {
                format!("{deduplication_id}{}", call.quota)
            };
            let grant = match self.backend(&action.handler, &action.adapter) {
                Some(Backend::Mem(limits, q)) => {
                    match limits.applied(&call.instance, &call.dimensions) {
                        Some(l) => q.alloc(
                            &l,
                            params.amount,
                            params.best_effort,
                            &dedup,
                            Instant::now(),
                        ),
                        None => unlimited(params.amount),
                    }
                }
                Some(Backend::Redis(p, q)) => {
                    match p.limits.applied(&call.instance, &call.dimensions) {
                        Some(l) => q.alloc(&l, params.amount, params.best_effort, &dedup).await,
                        None => unlimited(params.amount),
                    }
                }
                None => unlimited(params.amount),
            };
            tracing::debug!(quota = %call.quota, handler = %action.handler, granted = grant.amount, "quota allocated");
            let status = if grant.code != 0 {
                RpcStatus {
                    code: grant.code,
                    message: grant.message.clone(),
                    details: Vec::new(),
                }
            } else {
                RpcStatus::default()
            };
            let result = QuotaResult {
                valid_duration: Some(proto_duration(grant.valid_duration)),
                granted_amount: grant.amount,
                status: Some(status),
                referenced_attributes: Some(referenced(&call.references)),
            };
            match out.get(&call.quota) {
                Some(prev) if prev.granted_amount <= result.granted_amount => {}
                _ => {
                    out.insert(call.quota.clone(), result);
                }
            }
        }
        out
    }
}

/// A handler without a limit for the instance grants what was asked.
fn unlimited(amount: i64) -> Grant {
    Grant::ok(amount, Duration::from_secs(60))
}
