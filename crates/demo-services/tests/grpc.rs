//! The gRPC job against real peers: grpcurl through server reflection (no proto files), and a
//! tonic client built from the crate's generated code.

use demo_services::proto::demo::inspect_client::InspectClient;
use demo_services::proto::demo::MetadataRequest;
use demo_services::proto::helloworld::greeter_client::GreeterClient;
use demo_services::proto::helloworld::HelloRequest;
use demo_services::{spawn_grpc, STREAM_REPLIES};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::process::Command;

/// Runs grpcurl with `args` and returns its stdout; fails the test if grpcurl fails.
async fn grpcurl(args: &[&str]) -> String {
    let output = Command::new(test_support::tool("grpcurl"))
        .args(["-plaintext", "-max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("grpcurl runs");
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("grpcurl printed UTF-8")
}

/// Splits grpcurl's output, one pretty-printed JSON object per message, into values.
fn messages(output: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(output)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("grpcurl printed JSON messages")
}

#[tokio::test]
async fn grpcurl_lists_and_calls_through_reflection() {
    let job = spawn_grpc("g1").await;
    let addr = job.addr.to_string();

    let listed = grpcurl(&[&addr, "list"]).await;
    for service in [
        "helloworld.Greeter",
        "demo.Inspect",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listed.lines().any(|line| line == service),
            "{service} missing from {listed}"
        );
    }
    let described = grpcurl(&[&addr, "describe", "helloworld.Greeter"]).await;
    assert!(described.contains("SayHelloStream"), "{described}");

    let hello = grpcurl(&[
        "-d",
        r#"{"name":"x"}"#,
        &addr,
        "helloworld.Greeter/SayHello",
    ])
    .await;
    assert_eq!(
        messages(&hello),
        [serde_json::json!({"message": "Hello x from g1"})]
    );

    let stream = grpcurl(&[
        "-d",
        r#"{"name":"y"}"#,
        &addr,
        "helloworld.Greeter/SayHelloStream",
    ])
    .await;
    let replies: Vec<String> = messages(&stream)
        .iter()
        .map(|reply| reply["message"].as_str().expect("message").to_owned())
        .collect();
    let expected: Vec<String> = (1..=STREAM_REPLIES)
        .map(|i| format!("Hello y from g1 #{i}"))
        .collect();
    assert_eq!(replies, expected);

    let inspected = grpcurl(&[
        "-H",
        "x-test: yes",
        "-d",
        "{}",
        &addr,
        "demo.Inspect/Metadata",
    ])
    .await;
    let reply = &messages(&inspected)[0];
    assert_eq!(reply["server"], "g1");
    assert_eq!(reply["metadata"]["x-test"], "yes", "{reply}");
    assert!(
        reply["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|entry| entry["key"] == "x-test" && entry["value"] == "yes"),
        "{reply}"
    );
}

#[tokio::test]
async fn tonic_client_sees_the_job_and_its_metadata() {
    let job = spawn_grpc("g2").await;
    let url = job.url();

    let mut greeter = GreeterClient::connect(url.clone()).await.expect("connect");
    let reply = greeter
        .say_hello(HelloRequest {
            name: "rust".into(),
        })
        .await
        .expect("SayHello");
    assert_eq!(reply.into_inner().message, "Hello rust from g2");
    let mut stream = greeter
        .say_hello_stream(HelloRequest {
            name: "rust".into(),
        })
        .await
        .expect("SayHelloStream")
        .into_inner();
    let mut count = 0;
    while let Some(reply) = stream.next().await {
        count += 1;
        assert_eq!(
            reply.expect("reply").message,
            format!("Hello rust from g2 #{count}")
        );
    }
    assert_eq!(count, STREAM_REPLIES);

    let mut inspect = InspectClient::connect(url).await.expect("connect");
    let mut request = tonic::Request::new(MetadataRequest {});
    request
        .metadata_mut()
        .insert("x-forwarded-by", "test".parse().expect("ascii"));
    let reply = inspect
        .metadata(request)
        .await
        .expect("Metadata")
        .into_inner();
    assert_eq!(reply.server, "g2");
    assert_eq!(
        reply.metadata.get("x-forwarded-by").map(String::as_str),
        Some("test")
    );
}

#[tokio::test]
async fn reflection_v1_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let job = spawn_grpc("g3").await;
    let channel = tonic::transport::Endpoint::from_shared(job.url())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let reply = replies.next().await.expect("one reply").expect("reply");
    let Some(MessageResponse::ListServicesResponse(listed)) = reply.message_response else {
        panic!("unexpected reflection reply: {reply:?}");
    };
    let names: Vec<&str> = listed
        .service
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    for service in [
        "helloworld.Greeter",
        "demo.Inspect",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&service), "{service} missing from {names:?}");
    }
}
