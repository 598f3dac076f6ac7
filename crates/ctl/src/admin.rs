//! The `rabbitmqctl` commands: users, vhosts, permissions, definitions, connections.

use std::io::{Read, Write};

use serde_json::{Value, json};

use crate::client::seg;
use crate::table::{lookup, print};
use crate::{Command, CtlError, Ctx, banner};

pub(crate) fn run(ctx: &Ctx, command: Command, out: &mut dyn Write) -> Result<(), CtlError> {
    match command {
        c @ (Command::AddUser { .. }
        | Command::DeleteUser { .. }
        | Command::ChangePassword { .. }
        | Command::SetUserTags { .. }
        | Command::ListUsers) => users(ctx, c, out),
        c @ (Command::SetPermissions { .. }
        | Command::ClearPermissions { .. }
        | Command::ListPermissions) => permissions(ctx, c, out),
        c @ (Command::AddVhost { .. }
        | Command::DeleteVhost { .. }
        | Command::ListVhosts { .. }) => vhosts(ctx, c, out),
        Command::ExportDefinitions { file } => export(ctx, &file, out),
        Command::ImportDefinitions { file } => import(ctx, file.as_deref()),
        Command::CloseConnection { name, explanation } => {
            banner(&format!("Closing connection {name} ..."));
            let reason = explanation.unwrap_or_else(|| "Closed via brook ctl".into());
            ctx.client
                .delete(&format!("/api/connections/{}", seg(&name)), Some(&reason))
                .map(drop)
        }
        _ => Err(CtlError::Usage("not an admin command".into())),
    }
}

/// A deletion that succeeds when there was nothing to delete, as rabbitmqctl's.
fn ignore_missing(r: Result<Value, CtlError>) -> Result<(), CtlError> {
    match r {
        Err(CtlError::Api { status: 404, .. }) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Users: add (password from stdin if not given), delete, password, tags, list.
fn users(ctx: &Ctx, command: Command, out: &mut dyn Write) -> Result<(), CtlError> {
    match command {
        Command::AddUser {
            username,
            password,
            pre_hashed_password,
        } => add_user(ctx, &username, password, pre_hashed_password),
        Command::DeleteUser { username } => {
            banner(&format!("Deleting user \"{username}\" ..."));
            ignore_missing(
                ctx.client
                    .delete(&format!("/api/users/{}", seg(&username)), None),
            )
        }
        Command::ChangePassword { username, password } => {
            banner(&format!("Changing password for user \"{username}\" ..."));
            let mut user = existing_user(ctx, &username)?;
            user["password"] = json!(password_or_stdin(password)?);
            put_user(ctx, &username, user)
        }
        Command::SetUserTags { username, tags } => {
            banner(&format!(
                "Setting tags for user \"{username}\" to {tags:?} ..."
            ));
            let mut user = existing_user(ctx, &username)?;
            user["tags"] = json!(tags.join(","));
            put_user(ctx, &username, user)
        }
        Command::ListUsers => {
            banner("Listing users ...");
            let users = as_list(ctx.client.get("/api/users")?);
            let cols = ["user".to_string(), "tags".to_string()];
            print(out, ctx.format, &cols, &users, |u, c| match c {
                "user" => lookup(u, "name"),
                other => lookup(u, other),
            })
        }
        _ => Err(CtlError::Usage("not a users command".into())),
    }
}

/// Permissions in the command's vhost.
fn permissions(ctx: &Ctx, command: Command, out: &mut dyn Write) -> Result<(), CtlError> {
    match command {
        Command::SetPermissions {
            username,
            configure,
            write,
            read,
        } => {
            banner(&format!(
                "Setting permissions for user \"{username}\" in vhost \"{}\" ...",
                ctx.vhost
            ));
            existing_user(ctx, &username)?;
            let body = json!({ "configure": configure, "write": write, "read": read });
            ctx.client
                .put(&permission_path(ctx, &username), &body)
                .map(drop)
        }
        Command::ClearPermissions { username } => {
            banner(&format!(
                "Clearing permissions for user \"{username}\" in vhost \"{}\" ...",
                ctx.vhost
            ));
            ignore_missing(ctx.client.delete(&permission_path(ctx, &username), None))
        }
        Command::ListPermissions => {
            banner(&format!(
                "Listing permissions for vhost \"{}\" ...",
                ctx.vhost
            ));
            let items = as_list(
                ctx.client
                    .get(&format!("/api/vhosts/{}/permissions", seg(ctx.vhost)))?,
            );
            let cols: Vec<String> = ["user", "configure", "write", "read"]
                .map(String::from)
                .into();
            print(out, ctx.format, &cols, &items, lookup)
        }
        _ => Err(CtlError::Usage("not a permissions command".into())),
    }
}

/// Virtual hosts.
fn vhosts(ctx: &Ctx, command: Command, out: &mut dyn Write) -> Result<(), CtlError> {
    match command {
        Command::AddVhost {
            vhost,
            description,
            tags,
            default_queue_type,
        } => {
            banner(&format!("Adding vhost \"{vhost}\" ..."));
            let mut body = json!({ "description": description.unwrap_or_default(), "tags": tags.unwrap_or_default() });
            if let Some(t) = default_queue_type {
                body["default_queue_type"] = json!(t);
            }
            ctx.client
                .put(&format!("/api/vhosts/{}", seg(&vhost)), &body)
                .map(drop)
        }
        Command::DeleteVhost { vhost } => {
            banner(&format!("Deleting vhost \"{vhost}\" ..."));
            ctx.client
                .delete(&format!("/api/vhosts/{}", seg(&vhost)), None)
                .map(drop)
        }
        Command::ListVhosts { columns } => {
            banner("Listing vhosts ...");
            let items = as_list(ctx.client.get("/api/vhosts")?);
            let cols = if columns.is_empty() {
                vec!["name".to_string()]
            } else {
                columns
            };
            print(out, ctx.format, &cols, &items, lookup)
        }
        _ => Err(CtlError::Usage("not a vhosts command".into())),
    }
}

fn as_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

fn permission_path(ctx: &Ctx, user: &str) -> String {
    format!("/api/permissions/{}/{}", seg(ctx.vhost), seg(user))
}

fn add_user(
    ctx: &Ctx,
    username: &str,
    password: Option<String>,
    pre_hashed: bool,
) -> Result<(), CtlError> {
    banner(&format!("Adding user \"{username}\" ..."));
    if username.is_empty() {
        return Err(CtlError::Usage("a user needs a name".into()));
    }
    let path = format!("/api/users/{}", seg(username));
    if ctx.client.get(&path).is_ok() {
        return Err(CtlError::Refused {
            message: format!("User \"{username}\" already exists"),
            exit_code: 70,
        });
    }
    let secret = password_or_stdin(password)?;
    let body = if pre_hashed {
        json!({ "password_hash": secret, "tags": "" })
    } else {
        json!({ "password": secret, "tags": "" })
    };
    ctx.client.put(&path, &body)?;
    eprintln!(
        "Done. Don't forget to grant the user permissions to some virtual hosts! \
         See 'brook ctl help set_permissions' to learn more."
    );
    Ok(())
}

/// The user as PUT wants it back (tags kept), or rabbitmqctl's "does not exist" (exit 67).
fn existing_user(ctx: &Ctx, username: &str) -> Result<Value, CtlError> {
    match ctx.client.get(&format!("/api/users/{}", seg(username))) {
        Ok(user) => Ok(
            json!({ "password_hash": user["password_hash"], "hashing_algorithm": user["hashing_algorithm"], "tags": user["tags"] }),
        ),
        Err(CtlError::Api { status: 404, .. }) => Err(CtlError::Refused {
            message: format!("User \"{username}\" does not exist"),
            exit_code: 67,
        }),
        Err(e) => Err(e),
    }
}

fn put_user(ctx: &Ctx, username: &str, mut user: Value) -> Result<(), CtlError> {
    if user.get("password").is_some()
        && let Some(map) = user.as_object_mut()
    {
        map.remove("password_hash");
        map.remove("hashing_algorithm");
    }
    ctx.client
        .put(&format!("/api/users/{}", seg(username)), &user)
        .map(drop)
}

/// A password from the argument, or the first line of stdin (so it stays out of argv).
fn password_or_stdin(given: Option<String>) -> Result<String, CtlError> {
    if let Some(p) = given {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn export(ctx: &Ctx, file: &str, out: &mut dyn Write) -> Result<(), CtlError> {
    let defs = ctx.client.get("/api/definitions")?;
    let text = serde_json::to_string_pretty(&defs).map_err(|e| CtlError::Usage(e.to_string()))?;
    if file == "-" {
        writeln!(out, "{text}")?;
    } else {
        banner(&format!(
            "Exporting definitions in JSON to a file at \"{file}\" ..."
        ));
        std::fs::write(file, text + "\n")?;
    }
    Ok(())
}

fn import(ctx: &Ctx, file: Option<&str>) -> Result<(), CtlError> {
    let text = match file {
        Some(path) => {
            banner(&format!(
                "Importing definitions in JSON from a file at \"{path}\" ..."
            ));
            std::fs::read_to_string(path)?
        }
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
    };
    if text.trim().is_empty() {
        return Err(CtlError::Usage("the definitions are empty".into()));
    }
    let defs: Value =
        serde_json::from_str(&text).map_err(|e| CtlError::Usage(format!("not JSON: {e}")))?;
    ctx.client.post("/api/definitions", &defs)?;
    eprintln!("Successfully imported definitions.");
    Ok(())
}
