//! What RabbitMQ's list routes do with their query string (`rabbit_mgmt_util`): `sort` (a
//! dotted field path) and `sort_reverse`, `columns`, and pagination with `page`, `page_size`
//! and a `name` filter (`use_regex` is not supported: the filter is a substring match).

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};

const MAX_PAGE_SIZE: u64 = 500;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    sort: Option<String>,
    sort_reverse: Option<String>,
    columns: Option<String>,
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
}

/// Sorts, filters, pages and trims `items` as the query asks; `default_sort` are the fields
/// RabbitMQ sorts the route by when the query names none.
pub(crate) fn respond(
    mut items: Vec<Value>,
    query: &ListQuery,
    default_sort: &[&str],
) -> ApiResult<Response> {
    let keys: Vec<String> = match &query.sort {
        Some(field) if !field.is_empty() => vec![field.clone()],
        _ => default_sort.iter().map(|s| s.to_string()).collect(),
    };
    items.sort_by(|a, b| {
        keys.iter()
            .map(|k| compare(lookup(a, k), lookup(b, k)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if query.sort_reverse.as_deref() == Some("true") {
        items.reverse();
    }
    if let Some(columns) = &query.columns {
        let columns: Vec<&str> = columns.split(',').filter(|c| !c.is_empty()).collect();
        items = items.iter().map(|item| select(item, &columns)).collect();
    }
    let Some(page) = &query.page else {
        return Ok(Json(items).into_response());
    };
    paginate(items, page, query)
}

fn paginate(items: Vec<Value>, page: &str, query: &ListQuery) -> ApiResult<Response> {
    let invalid = || ApiError::Custom {
        status: axum::http::StatusCode::BAD_REQUEST,
        error: "invalid_pagination_parameters".into(),
        reason: "page and page_size must be positive integers, page_size at most 500".into(),
    };
    let page: u64 = page.parse().map_err(|_| invalid())?;
    let page_size: u64 = match &query.page_size {
        Some(s) => s.parse().map_err(|_| invalid())?,
        None => 100,
    };
    if page == 0 || page_size == 0 || page_size > MAX_PAGE_SIZE {
        return Err(invalid());
    }
    let total = items.len() as u64;
    let filtered: Vec<Value> = match &query.name {
        Some(n) if !n.is_empty() => items
            .into_iter()
            .filter(|i| {
                i["name"]
                    .as_str()
                    .is_some_and(|name| name.contains(n.as_str()))
            })
            .collect(),
        _ => items,
    };
    let filtered_count = filtered.len() as u64;
    let page_count = filtered_count.div_ceil(page_size).max(1);
    if page > page_count {
        return Err(ApiError::Custom {
            status: axum::http::StatusCode::BAD_REQUEST,
            error: "page_out_of_range".into(),
            reason: format!("page {page} of {page_count}"),
        });
    }
    let skip = usize::try_from((page - 1) * page_size).unwrap_or(usize::MAX);
    let take = usize::try_from(page_size).unwrap_or(usize::MAX);
    let page_items: Vec<Value> = filtered.into_iter().skip(skip).take(take).collect();
    Ok(Json(json!({
        "filtered_count": filtered_count,
        "item_count": page_items.len(),
        "items": page_items,
        "page": page,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total,
    }))
    .into_response())
}

/// A field by dotted path (`message_stats.publish`).
fn lookup<'a>(item: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(item, |v, key| v.get(key))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Keeps only the named (possibly dotted) columns.
fn select(item: &Value, columns: &[&str]) -> Value {
    let mut out = Map::new();
    for column in columns {
        let Some(value) = lookup(item, column) else {
            continue;
        };
        let mut path = column.split('.').peekable();
        let mut target = &mut out;
        while let Some(key) = path.next() {
            if path.peek().is_none() {
                target.insert(key.to_owned(), value.clone());
                break;
            }
            let next = target
                .entry(key.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(map) = next else { break };
            target = map;
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn columns_keep_nested_fields() {
        let item = json!({"name": "a", "queue": {"name": "s", "vhost": "/"}, "x": 1});
        assert_eq!(
            select(&item, &["name", "queue.name"]),
            json!({"name": "a", "queue": {"name": "s"}})
        );
    }

    #[test]
    fn sorting_compares_numbers_as_numbers() {
        let (a, b) = (json!({"n": 9}), json!({"n": 10}));
        assert!(compare(lookup(&a, "n"), lookup(&b, "n")).is_lt());
    }
}
