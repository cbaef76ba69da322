//! What the official MCP conformance suite's server scenarios expect of the server under test
//! (their descriptions ship in `@modelcontextprotocol/conformance`): the reference tools,
//! prompts, resources, completion and logging level. On when `demo-server --conformance`.

use std::time::Duration;

use serde_json::{Value, json};

use super::Demo;

/// A 1x1 PNG and a header-only WAV: minimal valid media for the content-type scenarios.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQAAAAA=";

type Outcome = Result<Value, (i64, String)>;

fn no_args() -> Value {
    json!({"type": "object", "properties": {}})
}

fn text(t: impl Into<String>) -> Outcome {
    Ok(json!({"content": [{"type": "text", "text": t.into()}]}))
}

pub fn tools() -> Vec<Value> {
    let simple = |name: &str, description: &str| json!({"name": name, "description": description, "inputSchema": no_args()});
    vec![
        simple("test_simple_text", "Returns simple text."),
        simple("test_image_content", "Returns an image."),
        simple("test_audio_content", "Returns audio."),
        simple("test_embedded_resource", "Returns an embedded resource."),
        simple(
            "test_multiple_content_types",
            "Returns text, an image and a resource.",
        ),
        simple(
            "test_tool_with_logging",
            "Logs three messages while it runs.",
        ),
        simple("test_error_handling", "Always fails."),
        simple(
            "test_tool_with_progress",
            "Reports progress 0, 50, 100 of 100.",
        ),
        json!({"name": "test_sampling", "description": "Asks the client's LLM.", "inputSchema": {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}}),
        json!({"name": "test_elicitation", "description": "Asks the user.", "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}}),
        simple(
            "test_elicitation_sep1034_defaults",
            "Elicitation with defaults for every primitive type.",
        ),
        simple(
            "test_elicitation_sep1330_enums",
            "Elicitation with every enum variant.",
        ),
        // Passed through verbatim: `$schema`, `$defs` (with `$anchor`), composition and
        // conditional keywords and `additionalProperties` must survive the gateway.
        json!({"name": "json_schema_2020_12_tool", "description": "Tool with JSON Schema 2020-12 features", "inputSchema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "$defs": {"address": {"$anchor": "addressDef", "type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"},
                "contactMethod": {"type": "string", "enum": ["phone", "email"]}, "phone": {"type": "string"}, "email": {"type": "string"}},
            "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
            "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
            "then": {"required": ["phone"]}, "else": {"required": ["email"]},
            "additionalProperties": false}}),
    ]
}

/// Calls a conformance tool; `None` if `name` is not one.
pub async fn call(demo: &Demo, name: &str, params: &Value) -> Option<Outcome> {
    let args = params.get("arguments").cloned().unwrap_or(json!({}));
    let token = params.pointer("/_meta/progressToken").cloned();
    Some(match name {
        "test_simple_text" => text("This is a simple text response for testing."),
        "json_schema_2020_12_tool" => text(format!("JSON Schema 2020-12 tool called with: {args}")),
        "test_image_content" => {
            Ok(json!({"content": [{"type": "image", "data": PNG, "mimeType": "image/png"}]}))
        }
        "test_audio_content" => {
            Ok(json!({"content": [{"type": "audio", "data": WAV, "mimeType": "audio/wav"}]}))
        }
        "test_embedded_resource" => Ok(json!({"content": [{"type": "resource", "resource": {
            "uri": "test://embedded-resource", "mimeType": "text/plain", "text": "This is an embedded resource content."}}]})),
        "test_multiple_content_types" => Ok(json!({"content": [
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "test://mixed-content-resource", "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}"}}
        ]})),
        "test_tool_with_logging" => {
            for (i, m) in [
                "Tool execution started",
                "Tool processing data",
                "Tool execution completed",
            ]
            .iter()
            .enumerate()
            {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                demo.notify("notifications/message", json!({"level": "info", "data": m}));
            }
            text("Tool with logging executed successfully")
        }
        "test_error_handling" => Ok(
            json!({"isError": true, "content": [{"type": "text", "text": "This tool intentionally returns an error for testing"}]}),
        ),
        "test_tool_with_progress" => {
            for (i, p) in [0, 50, 100].iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if let Some(t) = &token {
                    demo.notify(
                        "notifications/progress",
                        json!({"progressToken": t, "progress": p, "total": 100}),
                    );
                }
            }
            text("Tool with progress executed successfully")
        }
        "test_sampling" => {
            let prompt = args
                .get("prompt")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let params = json!({"messages": [{"role": "user", "content": {"type": "text", "text": prompt}}], "maxTokens": 100});
            match demo
                .ask("sampling/createMessage", params, Duration::from_secs(60))
                .await
            {
                Ok(a) if a.get("result").is_some() => {
                    let said = a
                        .pointer("/result/content/text")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    text(format!("LLM response: {said}"))
                }
                Ok(a) => Err((-32603, format!("sampling failed: {}", a["error"]))),
                Err(_) => Err((
                    -32603,
                    "the client did not answer the sampling request".into(),
                )),
            }
        }
        "test_elicitation" => {
            let message = args
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let schema = json!({"type": "object", "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"}}, "required": ["username", "email"]});
            elicit(
                demo,
                json!({"message": message, "requestedSchema": schema}),
                "User response",
            )
            .await
        }
        "test_elicitation_sep1034_defaults" => {
            let schema = json!({"type": "object", "properties": {
                "name": {"type": "string", "default": "John Doe"},
                "age": {"type": "integer", "default": 30},
                "score": {"type": "number", "default": 95.5},
                "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
                "verified": {"type": "boolean", "default": true}}});
            elicit(
                demo,
                json!({"message": "Please review your information", "requestedSchema": schema}),
                "Elicitation completed",
            )
            .await
        }
        "test_elicitation_sep1330_enums" => {
            let schema = json!({"type": "object", "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {"type": "string", "oneOf": [
                    {"const": "value1", "title": "First Option"}, {"const": "value2", "title": "Second Option"}, {"const": "value3", "title": "Third Option"}]},
                "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"]},
                "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                "titledMulti": {"type": "array", "items": {"anyOf": [
                    {"const": "value1", "title": "First Choice"}, {"const": "value2", "title": "Second Choice"}, {"const": "value3", "title": "Third Choice"}]}}}});
            elicit(
                demo,
                json!({"message": "Please select options", "requestedSchema": schema}),
                "Elicitation completed",
            )
            .await
        }
        _ => return None,
    })
}

async fn elicit(demo: &Demo, params: Value, prefix: &str) -> Outcome {
    match demo
        .ask("elicitation/create", params, Duration::from_secs(60))
        .await
    {
        Ok(a) if a.get("result").is_some() => {
            let action = a
                .pointer("/result/action")
                .and_then(Value::as_str)
                .unwrap_or("");
            let content = a.pointer("/result/content").cloned().unwrap_or(json!({}));
            if prefix == "User response" {
                text(format!("User response: action={action}, content={content}"))
            } else {
                text(format!("{prefix}: action={action}, content={content}"))
            }
        }
        Ok(a) => Err((-32603, format!("elicitation failed: {}", a["error"]))),
        Err(_) => Err((
            -32603,
            "the client did not answer the elicitation request".into(),
        )),
    }
}

pub fn prompts() -> Value {
    json!({"prompts": [
        {"name": "test_simple_prompt", "description": "A simple prompt."},
        {"name": "test_prompt_with_arguments", "description": "A prompt with arguments.", "arguments": [
            {"name": "arg1", "description": "First test argument", "required": true},
            {"name": "arg2", "description": "Second test argument", "required": true}]},
        {"name": "test_prompt_with_embedded_resource", "description": "A prompt with an embedded resource.", "arguments": [
            {"name": "resourceUri", "description": "URI of the resource to embed", "required": true}]},
        {"name": "test_prompt_with_image", "description": "A prompt with an image."}
    ]})
}

pub fn prompt(params: &Value) -> Outcome {
    let name = params.get("name").and_then(Value::as_str).unwrap_or("");
    let arg = |k: &str| {
        params
            .pointer(&format!("/arguments/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let user = |content: Value| json!({"role": "user", "content": content});
    let messages = match name {
        "test_simple_prompt" => vec![user(
            json!({"type": "text", "text": "This is a simple prompt for testing."}),
        )],
        "test_prompt_with_arguments" => vec![user(
            json!({"type": "text", "text": format!("Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1"), arg("arg2"))}),
        )],
        "test_prompt_with_embedded_resource" => vec![
            user(
                json!({"type": "resource", "resource": {"uri": arg("resourceUri"), "mimeType": "text/plain", "text": "Embedded resource content for testing."}}),
            ),
            user(json!({"type": "text", "text": "Please process the embedded resource above."})),
        ],
        "test_prompt_with_image" => vec![
            user(json!({"type": "image", "data": PNG, "mimeType": "image/png"})),
            user(json!({"type": "text", "text": "Please analyze the image above."})),
        ],
        other => return Err((-32602, format!("unknown prompt: {other}"))),
    };
    Ok(json!({"messages": messages}))
}

pub fn resources() -> Value {
    json!({"resources": [
        {"uri": "test://static-text", "name": "static-text", "description": "A static text resource.", "mimeType": "text/plain"},
        {"uri": "test://static-binary", "name": "static-binary", "description": "A static binary resource.", "mimeType": "image/png"},
        {"uri": "test://watched-resource", "name": "watched-resource", "description": "A resource to subscribe to.", "mimeType": "text/plain"}
    ]})
}

pub fn templates() -> Value {
    json!({"resourceTemplates": [
        {"uriTemplate": "test://template/{id}/data", "name": "template-data", "description": "Data for an id.", "mimeType": "application/json"}
    ]})
}

pub fn read(params: &Value) -> Outcome {
    let uri = params.get("uri").and_then(Value::as_str).unwrap_or("");
    let contents = match uri {
        "test://static-text" => {
            json!({"uri": uri, "mimeType": "text/plain", "text": "This is the content of the static text resource."})
        }
        "test://static-binary" => json!({"uri": uri, "mimeType": "image/png", "blob": PNG}),
        "test://watched-resource" => {
            json!({"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."})
        }
        _ => match uri
            .strip_prefix("test://template/")
            .and_then(|r| r.strip_suffix("/data"))
        {
            Some(id) if !id.contains('/') => {
                let body =
                    json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
                json!({"uri": uri, "mimeType": "application/json", "text": body.to_string()})
            }
            _ => return Err((-32002, format!("resource not found: {uri}"))),
        },
    };
    Ok(json!({"contents": [contents]}))
}

pub fn complete(_params: &Value) -> Outcome {
    Ok(json!({"completion": {"values": [], "total": 0, "hasMore": false}}))
}

/// The capabilities the conformance fixture declares on top of the demo's.
pub fn capabilities() -> Value {
    json!({"tools": {"listChanged": true}, "logging": {}, "prompts": {"listChanged": true},
           "resources": {"subscribe": true, "listChanged": true}, "completions": {}})
}

/// Methods beyond tools: `None` if `method` is not one the fixture serves.
pub fn method(method: &str, params: &Value) -> Option<Outcome> {
    Some(match method {
        "prompts/list" => Ok(prompts()),
        "prompts/get" => prompt(params),
        "resources/list" => Ok(resources()),
        "resources/templates/list" => Ok(templates()),
        "resources/read" => read(params),
        "resources/subscribe" | "resources/unsubscribe" | "logging/setLevel" => Ok(json!({})),
        "completion/complete" => complete(params),
        _ => return None,
    })
}
