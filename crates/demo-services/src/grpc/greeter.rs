//! `helloworld.Greeter`: greetings that name the job that answered.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{stream, Stream};
use tonic::{Request, Response, Status};

use super::proto::helloworld::greeter_server;
use super::proto::helloworld::{HelloReply, HelloRequest};

/// How many replies `SayHelloStream` sends.
pub const STREAM_REPLIES: usize = 5;
/// The pause between two streamed replies, unless the job was started with another.
pub const STREAM_INTERVAL: Duration = Duration::from_millis(50);

/// The Greeter of one job.
#[derive(Debug)]
pub(super) struct Greeter {
    name: String,
    interval: Duration,
}

impl Greeter {
    pub(super) fn new(name: String, interval: Duration) -> Self {
        Self { name, interval }
    }

    fn greeting(&self, request: &HelloRequest) -> String {
        format!("Hello {} from {}", request.name, self.name)
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

#[tonic::async_trait]
impl greeter_server::Greeter for Greeter {
    /// Replies `Hello <name> from <job>`.
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let message = self.greeting(request.get_ref());
        Ok(Response::new(HelloReply { message }))
    }

    type SayHelloStreamStream = ReplyStream;

    /// Replies `Hello <name> from <job> #<i>` for i in 1..=5, 50 ms apart (or the job's
    /// interval).
    async fn say_hello_stream(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<Self::SayHelloStreamStream>, Status> {
        let greeting = self.greeting(request.get_ref());
        let interval = self.interval;
        let replies = stream::unfold(1usize, move |index| {
            let greeting = greeting.clone();
            async move {
                if index > STREAM_REPLIES {
                    return None;
                }
                if index > 1 && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
                let reply = HelloReply {
                    message: format!("{greeting} #{index}"),
                };
                Some((Ok(reply), index + 1))
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }
}
