//! The commands of an open connection, one function each.

use std::sync::atomic::Ordering;

use super::reader::ReadSocket;
use super::{ConnError, Connection, Flow};
use crate::handshake::{Login, authenticate};
use brook_auth::Perm;
use brook_broker::cluster::{Endpoint, Members};
use brook_broker::{Charge, Error, Outgoing, Session, stream_name};
use brook_protocol::{
    BrokerEndpoint, CommandVersion, CreditResponse, ExchangeCommandVersions,
    ExchangeCommandVersionsResponse, Frame, MetadataResponse, PartitionsResponse,
    QueryOffsetResponse, QueryPublisherSequenceResponse, Response, ResponseCode, RouteResponse,
    SaslAuthenticate, SaslAuthenticateResponse, StreamMetadata, StreamStatsResponse, Subscribe,
    keys,
};

/// A plain response for a broker result.
fn response(correlation_id: u32, r: Result<(), brook_broker::Error>) -> Response {
    Response {
        correlation_id,
        code: code_of(&r),
    }
}

/// The response code for a broker result.
fn code_of<T>(r: &Result<T, brook_broker::Error>) -> ResponseCode {
    r.as_ref().err().map_or(ResponseCode::OK, |e| e.code())
}

impl<R: ReadSocket> Connection<R> {
    /// Handles one frame. `charge` is the frame's share of the budget: a Publish (or
    /// StoreOffset) keeps it until it is done with; every other request gives it back before
    /// its response is charged.
    pub(super) async fn dispatch(
        &mut self,
        session: &mut Session,
        frame: Frame,
        charge: Charge,
    ) -> Result<Flow, ConnError> {
        let reply = match frame {
            Frame::Publish(p) => {
                session.publish(p, charge);
                return Ok(Flow::Continue);
            }
            Frame::StoreOffset(c) => {
                // Never answered: refused silently, as RabbitMQ does (no check on a stream this
                // connection consumes from).
                if session.is_subscribed_to(&c.stream) || self.allowed(Perm::Read, &c.stream) {
                    session.store_offset(&c.reference, &c.stream, c.offset, charge);
                } else {
                    tracing::info!(peer = %self.peer, stream = %c.stream, "StoreOffset refused");
                }
                return Ok(Flow::Continue);
            }
            frame => {
                drop(charge);
                // Boxed: the largest of these futures would otherwise size every idle
                // connection's task (issue #12: memory per idle connection).
                match Box::pin(self.reply(session, frame)).await? {
                    Ok(reply) => reply,
                    Err(flow) => return Ok(flow),
                }
            }
        };
        if let Some(reply) = reply {
            self.send(reply).await?;
        }
        Ok(Flow::Continue)
    }

    /// The response to a request (`None`: none is due), or how the connection goes on.
    async fn reply(
        &mut self,
        session: &mut Session,
        frame: Frame,
    ) -> Result<Result<Option<Frame>, Flow>, ConnError> {
        let reply = match frame {
            Frame::Heartbeat(_) | Frame::CloseResponse(_) => None,
            Frame::DeclarePublisher(_)
            | Frame::DeletePublisher(_)
            | Frame::QueryPublisherSequence(_) => self.publishing(session, frame).await,
            Frame::Credit(_)
            | Frame::Subscribe(_)
            | Frame::Unsubscribe(_)
            | Frame::QueryOffset(_)
            | Frame::ConsumerUpdateResponse(_) => self.consuming(session, frame).await?,
            Frame::Create(_) | Frame::Delete(_) | Frame::Metadata(_) | Frame::StreamStats(_) => {
                self.streams(session, frame).await
            }
            Frame::CreateSuperStream(_)
            | Frame::DeleteSuperStream(_)
            | Frame::Route(_)
            | Frame::Partitions(_) => self.super_streams(frame).await,
            Frame::ExchangeCommandVersions(c) => Some(self.exchange_command_versions(c)),
            Frame::SaslAuthenticate(a) => return self.reauthenticate(a).await.map(Err),
            Frame::Close(c) => {
                self.send(Frame::CloseResponse(Response {
                    correlation_id: c.correlation_id,
                    code: ResponseCode::OK,
                }))
                .await?;
                let _ = self.out.send(Outgoing::Close);
                return Ok(Err(Flow::Stop));
            }
            other => {
                tracing::info!(peer = %self.peer, key = other.key(), "command not valid here");
                return Ok(Err(Flow::ServerClose(
                    ResponseCode::UNKNOWN_FRAME,
                    "unknown frame",
                )));
            }
        };
        Ok(Ok(reply))
    }

    /// Publisher commands: DeclarePublisher needs write, QueryPublisherSequence read.
    async fn publishing(&mut self, session: &mut Session, frame: Frame) -> Option<Frame> {
        match frame {
            Frame::DeclarePublisher(c) => Some(Frame::DeclarePublisherResponse(response(
                c.correlation_id,
                self.check(Perm::Write, &c.stream).and_then(|()| {
                    session.declare_publisher(c.publisher_id, &c.reference, &c.stream)
                }),
            ))),
            Frame::DeletePublisher(c) => Some(Frame::DeletePublisherResponse(response(
                c.correlation_id,
                session.delete_publisher(c.publisher_id),
            ))),
            Frame::QueryPublisherSequence(c) => {
                let r = match self.check(Perm::Read, &c.stream) {
                    Ok(()) => {
                        session
                            .query_publisher_sequence(&c.reference, &c.stream)
                            .await
                    }
                    Err(e) => Err(e),
                };
                Some(Frame::QueryPublisherSequenceResponse(
                    QueryPublisherSequenceResponse {
                        correlation_id: c.correlation_id,
                        code: code_of(&r),
                        sequence: r.unwrap_or(0),
                    },
                ))
            }
            _ => None,
        }
    }

    /// Consumer commands: Subscribe and QueryOffset need read.
    async fn consuming(
        &mut self,
        session: &mut Session,
        frame: Frame,
    ) -> Result<Option<Frame>, ConnError> {
        let reply = match frame {
            Frame::Credit(c) => session.credit(c.subscription_id, c.credit).err().map(|e| {
                Frame::CreditResponse(CreditResponse {
                    code: e.code(),
                    subscription_id: c.subscription_id,
                })
            }),
            Frame::Subscribe(c) => {
                self.subscribe(session, c).await?;
                None
            }
            Frame::Unsubscribe(c) => Some(Frame::UnsubscribeResponse(response(
                c.correlation_id,
                session.unsubscribe(c.subscription_id),
            ))),
            Frame::QueryOffset(c) => {
                let r = match self.check(Perm::Read, &c.stream) {
                    Ok(()) => session.query_offset(&c.reference, &c.stream).await,
                    Err(e) => Err(e),
                };
                Some(Frame::QueryOffsetResponse(QueryOffsetResponse {
                    correlation_id: c.correlation_id,
                    code: code_of(&r),
                    offset: r.unwrap_or(0),
                }))
            }
            // Never answered (the Rust client 0.11 waits for an answer, wrongly).
            Frame::ConsumerUpdateResponse(r) => {
                if let Some((id, active, _)) = self.consumer_updates.remove(&r.correlation_id) {
                    session.consumer_update_answered(id, active, r.offset);
                }
                None
            }
            _ => None,
        };
        Ok(reply)
    }

    /// Stream commands: Create and Delete need configure, StreamStats read, Metadata either.
    async fn streams(&mut self, session: &mut Session, frame: Frame) -> Option<Frame> {
        let broker = self.ctx.broker.clone();
        let vhost = self.handshake.vhost.clone();
        match frame {
            Frame::Create(c) => {
                let name =
                    stream_name(&c.stream).and_then(|n| self.check_owned(Perm::Configure, n));
                let r = match name {
                    Ok(name) => broker.create_stream(&vhost, &name, &c.arguments).await,
                    Err(e) => Err(e),
                };
                Some(Frame::CreateResponse(response(c.correlation_id, r)))
            }
            Frame::Delete(c) => {
                let r = match self.check(Perm::Configure, &c.stream) {
                    Ok(()) => broker.delete_stream(&vhost, &c.stream).await,
                    Err(e) => Err(e),
                };
                Some(Frame::DeleteResponse(response(c.correlation_id, r)))
            }
            Frame::Metadata(c) => Some(Frame::MetadataResponse(self.metadata(
                session,
                c.correlation_id,
                c.streams,
            ))),
            Frame::StreamStats(c) => {
                let r = self
                    .check(Perm::Read, &c.stream)
                    .and_then(|()| session.stream_stats(&c.stream));
                Some(Frame::StreamStatsResponse(stream_stats(
                    c.correlation_id,
                    r,
                )))
            }
            _ => None,
        }
    }

    /// Super stream commands, checked as RabbitMQ checks its exchange and bindings.
    async fn super_streams(&mut self, frame: Frame) -> Option<Frame> {
        let broker = self.ctx.broker.clone();
        let vhost = self.handshake.vhost.clone();
        match frame {
            Frame::CreateSuperStream(c) => {
                let name =
                    stream_name(&c.name).and_then(|n| self.check_super_stream(n, &c.partitions));
                let r = match name {
                    Ok(name) => {
                        broker
                            .create_super_stream(
                                &vhost,
                                &name,
                                &c.partitions,
                                &c.binding_keys,
                                &c.arguments,
                            )
                            .await
                    }
                    Err(e) => Err(e),
                };
                Some(Frame::CreateSuperStreamResponse(response(
                    c.correlation_id,
                    r,
                )))
            }
            Frame::DeleteSuperStream(c) => {
                // Configure on the super stream first; then the partitions it really has.
                let r = self
                    .check(Perm::Configure, &c.name)
                    .and_then(|()| broker.super_stream(&vhost, &c.name))
                    .and_then(|ss| self.check_super_stream(c.name.clone(), &ss.partitions));
                let r = match r {
                    Ok(name) => broker.delete_super_stream(&vhost, &name).await,
                    Err(e) => Err(e),
                };
                Some(Frame::DeleteSuperStreamResponse(response(
                    c.correlation_id,
                    r,
                )))
            }
            Frame::Route(c) => {
                let r = self
                    .check(Perm::Write, &c.super_stream)
                    .and_then(|()| broker.route(&vhost, &c.super_stream, &c.routing_key))
                    .and_then(|streams| self.check_all(&[Perm::Write], streams));
                Some(Frame::RouteResponse(RouteResponse {
                    correlation_id: c.correlation_id,
                    code: code_of(&r),
                    streams: r.unwrap_or_default(),
                }))
            }
            Frame::Partitions(c) => {
                let either = [Perm::Read, Perm::Write];
                let r = self
                    .check_any(&either, &c.super_stream)
                    .and_then(|()| broker.super_stream(&vhost, &c.super_stream))
                    .and_then(|ss| self.check_all(&either, ss.partitions));
                Some(Frame::PartitionsResponse(PartitionsResponse {
                    correlation_id: c.correlation_id,
                    code: code_of(&r),
                    streams: r.unwrap_or_default(),
                }))
            }
            _ => None,
        }
    }

    async fn subscribe(&mut self, session: &mut Session, c: Subscribe) -> Result<(), ConnError> {
        let props = c.properties.as_deref().unwrap_or_default();
        let subscribed = self.check(Perm::Read, &c.stream).and_then(|()| {
            session.subscribe(c.subscription_id, &c.stream, c.offset, c.credit, props)
        });
        match subscribed {
            Ok(subscribed) => {
                // The response goes into the queue before any Deliver can.
                self.send(Frame::SubscribeResponse(response(c.correlation_id, Ok(()))))
                    .await?;
                session.start(subscribed);
            }
            Err(e) => {
                self.send(Frame::SubscribeResponse(response(c.correlation_id, Err(e))))
                    .await?
            }
        }
        Ok(())
    }

    /// Whether the connection's user has `perm` on `resource` in its vhost (the live
    /// permissions: a change applies to the next command, as in RabbitMQ).
    fn allowed(&self, perm: Perm, resource: &str) -> bool {
        let user = self.handshake.user.as_deref().unwrap_or_default();
        self.ctx
            .access
            .permitted(user, &self.handshake.vhost, perm, resource)
    }

    fn check(&self, perm: Perm, resource: &str) -> Result<(), Error> {
        if self.allowed(perm, resource) {
            Ok(())
        } else {
            Err(Error::AccessRefused(resource.to_owned()))
        }
    }

    fn check_owned(&self, perm: Perm, resource: String) -> Result<String, Error> {
        self.check(perm, &resource).map(|()| resource)
    }

    /// Any of `perms` on `resource`.
    fn check_any(&self, perms: &[Perm], resource: &str) -> Result<(), Error> {
        if perms.iter().any(|&p| self.allowed(p, resource)) {
            Ok(())
        } else {
            Err(Error::AccessRefused(resource.to_owned()))
        }
    }

    /// Any of `perms` on every one of `resources`.
    fn check_all(&self, perms: &[Perm], resources: Vec<String>) -> Result<Vec<String>, Error> {
        for r in &resources {
            self.check_any(perms, r)?;
        }
        Ok(resources)
    }

    /// RabbitMQ's super stream management check: configure on the super stream (an exchange)
    /// and on every partition, read on the super stream, write on every partition.
    fn check_super_stream(&self, name: String, partitions: &[String]) -> Result<String, Error> {
        self.check(Perm::Configure, &name)?;
        for p in partitions {
            self.check(Perm::Configure, p)?;
        }
        self.check(Perm::Read, &name)?;
        for p in partitions {
            self.check(Perm::Write, p)?;
        }
        Ok(name)
    }

    fn exchange_command_versions(&self, c: ExchangeCommandVersions) -> Frame {
        // Only a client that can read Deliver v2 gets it (Java, JS).
        let v2 = c
            .commands
            .iter()
            .any(|v| v.key == keys::DELIVER && v.max_version >= 2);
        self.shared.deliver_v2.store(v2, Ordering::Relaxed);
        Frame::ExchangeCommandVersionsResponse(ExchangeCommandVersionsResponse {
            correlation_id: c.correlation_id,
            code: ResponseCode::OK,
            commands: supported_commands(),
        })
    }

    /// Re-authentication after Open (token refresh, RabbitMQ 3.13+).
    async fn reauthenticate(&mut self, a: SaslAuthenticate) -> Result<Flow, ConnError> {
        let login = Login {
            mechanism: &a.mechanism,
            data: a.data.as_deref(),
            peer: self.peer.ip(),
            identity: self.handshake.identity.as_deref(),
        };
        let result = authenticate(&login, &self.ctx.config, &self.ctx.access);
        let code = match result {
            _ if Some(&a.mechanism) != self.handshake.mechanism.as_ref() => {
                ResponseCode::SASL_CANNOT_CHANGE_MECHANISM
            }
            Ok(user) if Some(&user) != self.handshake.user.as_ref() => {
                ResponseCode::SASL_CANNOT_CHANGE_USERNAME
            }
            Ok(_) => ResponseCode::OK,
            Err(code) => code,
        };
        self.send(Frame::SaslAuthenticateResponse(SaslAuthenticateResponse {
            correlation_id: a.correlation_id,
            code,
            challenge: None,
        }))
        .await?;
        if code.is_ok() {
            return Ok(Flow::Continue);
        }
        let _ = self.out.send(Outgoing::Close);
        Ok(Flow::Stop)
    }

    fn metadata(
        &self,
        session: &mut Session,
        correlation_id: u32,
        names: Vec<String>,
    ) -> MetadataResponse {
        let mut streams: Vec<StreamMetadata> = Vec::with_capacity(names.len());
        let mut brokers: Vec<BrokerEndpoint> = Vec::new();
        for name in names {
            if streams.iter().any(|s| s.stream == name) {
                continue;
            }
            let allowed = self.allowed(Perm::Read, &name) || self.allowed(Perm::Write, &name);
            let found = if allowed {
                self.locate(session, &name)
            } else {
                Err(Error::AccessRefused(name.clone()))
            };
            let (code, leader, replicas) = match found {
                Ok(members) => {
                    let leader = reference(&mut brokers, members.leader);
                    let replicas = members
                        .replicas
                        .into_iter()
                        .map(|r| reference(&mut brokers, r))
                        .collect();
                    (ResponseCode::OK, leader, replicas)
                }
                Err(e) => (e.code(), 0xffff, vec![]),
            };
            streams.push(StreamMetadata {
                stream: name,
                code,
                leader,
                replicas,
            });
        }
        MetadataResponse {
            correlation_id,
            brokers,
            streams,
        }
    }

    /// Where a stream lives: in a cluster, its leader and replicas as the metadata group
    /// places them; otherwise this node.
    fn locate(&self, session: &mut Session, name: &str) -> Result<Members, Error> {
        let local = session.metadata(name);
        let id = brook_broker::StreamId::new(self.handshake.vhost.clone(), name);
        if let Some(members) = self.ctx.broker.members(&id) {
            return Ok(members);
        }
        local.map(|()| Members {
            leader: Endpoint {
                host: self.handshake.advertised_host.clone(),
                port: self.ctx.advertised_port,
            },
            replicas: vec![],
        })
    }
}

/// The reference of `endpoint` in the Metadata response's broker list (added if new).
fn reference(brokers: &mut Vec<BrokerEndpoint>, endpoint: Endpoint) -> u16 {
    let port = u32::from(endpoint.port);
    if let Some(i) = brokers
        .iter()
        .position(|b| b.host == endpoint.host && b.port == port)
    {
        return brokers[i].reference;
    }
    let reference = u16::try_from(brokers.len()).unwrap_or(u16::MAX);
    brokers.push(BrokerEndpoint {
        reference,
        host: endpoint.host,
        port,
    });
    reference
}

fn stream_stats(correlation_id: u32, r: Result<brook_log::LogStats, Error>) -> StreamStatsResponse {
    let id = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    // osiris's get_stats as RabbitMQ 3.12–4.2 pass it through: every key always present,
    // -1 for "none yet" (the Go and .NET clients report -1 as "not found"; a missing key
    // would read as 0). `committed_offset` arrived with RabbitMQ 4.3.
    let stats = match &r {
        Ok(s) => vec![
            ("committed_chunk_id".into(), id(s.committed_chunk_id)),
            ("first_chunk_id".into(), id(s.first_chunk_id)),
            ("last_chunk_id".into(), id(s.last_chunk_id)),
        ],
        Err(_) => vec![],
    };
    StreamStatsResponse {
        correlation_id,
        code: code_of(&r),
        stats,
    }
}

/// What ExchangeCommandVersions answers, in RabbitMQ's order: rstream reads the list by
/// position (`key - 1`), so DeclarePublisher comes first and Publish second. Only implemented
/// commands are listed.
/// Publish 1–2 tells clients that filtering works.
fn supported_commands() -> Vec<CommandVersion> {
    [
        (keys::DECLARE_PUBLISHER, 1),
        (keys::PUBLISH, 2),
        (keys::QUERY_PUBLISHER_SEQUENCE, 1),
        (keys::DELETE_PUBLISHER, 1),
        (keys::SUBSCRIBE, 1),
        (keys::CREDIT, 1),
        (keys::STORE_OFFSET, 1),
        (keys::QUERY_OFFSET, 1),
        (keys::UNSUBSCRIBE, 1),
        (keys::CREATE, 1),
        (keys::DELETE, 1),
        (keys::METADATA, 1),
        (keys::CLOSE, 1),
        (keys::HEARTBEAT, 1),
        (keys::ROUTE, 1),
        (keys::PARTITIONS, 1),
        (keys::STREAM_STATS, 1),
        (keys::CREATE_SUPER_STREAM, 1),
        (keys::DELETE_SUPER_STREAM, 1),
    ]
    .into_iter()
    .map(|(key, max_version)| CommandVersion {
        key,
        min_version: 1,
        max_version,
    })
    .collect()
}
