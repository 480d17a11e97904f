//! `kvstore users …` and `kvstore share`: administration of users, tokens and shares, on a running
//! server through its admin API (`--server`) or on a data directory or database directly, both
//! through [`crate::ops::admin::Admin`].

use std::sync::Arc;

use super::args::{ShareArgs, ShareSetting, Target, UsersCommand};
use super::{open_offline, Outcome};
use crate::model::{ShareAccess, Username};
use crate::ops::admin::{self, Admin};
use crate::storage::{self, Store};

/// The admin operations on the command's target, and the backend to close afterwards.
async fn admin_of(
    target: &Target,
) -> Result<(Box<dyn Admin>, Option<Arc<dyn Store>>), Box<dyn std::error::Error>> {
    match &target.server {
        Some(server) => {
            let token = target
                .token
                .as_deref()
                .ok_or("--server needs an administrator's token (--token or KVSTORE_TOKEN)")?;
            Ok((Box::new(admin::Remote::new(server, token)), None))
        }
        None => {
            let store = open_offline(&target.data).await?;
            Ok((Box::new(admin::Local(store.clone())), Some(store)))
        }
    }
}

pub async fn users(cmd: UsersCommand) -> Outcome {
    let target = match &cmd {
        UsersCommand::Create { target, .. }
        | UsersCommand::List { target }
        | UsersCommand::Disable { target, .. }
        | UsersCommand::Enable { target, .. }
        | UsersCommand::Delete { target, .. }
        | UsersCommand::RotateToken { target, .. }
        | UsersCommand::AddToken { target, .. } => target.clone(),
    };
    let (admin, store) = admin_of(&target).await?;
    let result = run_users(cmd, &*admin).await;
    if let Some(store) = store {
        store.close().await?;
    }
    result
}

async fn run_users(cmd: UsersCommand, admin: &dyn Admin) -> Outcome {
    let disable = matches!(cmd, UsersCommand::Disable { .. });
    let rotate = matches!(cmd, UsersCommand::RotateToken { .. });
    match cmd {
        UsersCommand::Create {
            name,
            admin: is_admin,
            read_only,
            ..
        } => {
            let issued = admin
                .create_user(&Username::parse(&name)?, is_admin, read_only)
                .await?;
            let kind = if read_only { " read-only" } else { "" };
            println!(
                "Created user \"{}\" (id {}).{kind} Token:",
                issued.user.username, issued.user.id
            );
            println!("{}", issued.token);
        }
        UsersCommand::List { .. } => {
            println!(
                "{:<17}  {:<24}  {:<5}  {:<8}  CREATED",
                "ID", "USERNAME", "ADMIN", "DISABLED"
            );
            for u in admin.users().await? {
                println!(
                    "{:<17}  {:<24}  {:<5}  {:<8}  {}",
                    u.id, u.username, u.is_admin, u.disabled, u.created_at
                );
            }
        }
        UsersCommand::Disable { name, .. } | UsersCommand::Enable { name, .. } => {
            let update = storage::UserUpdate {
                disabled: Some(disable),
                is_admin: None,
            };
            let user = admin.update_user(&Username::parse(&name)?, update).await?;
            let state = if user.disabled { "disabled" } else { "enabled" };
            println!("User \"{}\" is {state}.", user.username);
        }
        UsersCommand::Delete { name, .. } => {
            admin.delete_user(&Username::parse(&name)?).await?;
            println!("Deleted user \"{name}\" with its tokens and stores.");
        }
        UsersCommand::RotateToken {
            name, read_only, ..
        }
        | UsersCommand::AddToken {
            name, read_only, ..
        } => {
            let issued = admin
                .new_token(&Username::parse(&name)?, read_only, rotate)
                .await?;
            let kind = if read_only { "read-only" } else { "full" };
            if rotate {
                println!("Revoked every token of \"{name}\". New {kind} token:");
            } else {
                println!("New {kind} token for \"{name}\":");
            }
            println!("{}", issued.token);
        }
    }
    Ok(())
}

pub async fn share(args: ShareArgs) -> Outcome {
    let with = Username::parse(&args.with)?;
    let access = match args.access {
        ShareSetting::Read => Some(ShareAccess::Read),
        ShareSetting::Write => Some(ShareAccess::Write),
        ShareSetting::None => None,
    };
    let (admin, store) = admin_of(&args.target).await?;
    let result = admin.share(&args.store, &with, access).await;
    if let Some(store) = store {
        store.close().await?;
    }
    result?;
    match access {
        Some(access) => println!(
            "Shared {} with \"{with}\" ({}).",
            args.store,
            access.as_str()
        ),
        None => println!("{} is no longer shared with \"{with}\".", args.store),
    }
    Ok(())
}
