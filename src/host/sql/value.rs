//! Values across the SQL boundary: Rhai values bound as parameters ([`Param`]) and result
//! columns turned into Rhai values (`pg_row`, `sqlite_row`).
//!
//! Columns: integers, floats, bool, text, `()` for NULL; numeric as an integer when it has no
//! scale and fits, as a float when the float prints back as the same decimal, else as a string
//! (no silent rounding); timestamps as RFC 3339 UTC strings (a `timestamp` without time zone is
//! read as UTC); dates as `YYYY-MM-DD`; json/jsonb as maps and arrays; uuid as a string; bytea
//! as a blob; one-dimensional arrays of these. Any other type is an error naming the column and
//! its type, with the cast that fixes it: a value is never silently dropped.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use rhai::{Array, Blob, Dynamic, Map};
use sqlx::postgres::{PgArguments, PgRow, PgTypeInfo, PgTypeKind, PgValueFormat};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Column, Postgres, Row, Sqlite, TypeInfo, ValueRef};

use crate::host::time::Timestamp;

/// A parameter, converted once from the Rhai value and bound per engine.
#[derive(Debug, Clone)]
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Json(serde_json::Value),
    Timestamp(DateTime<Utc>),
    Ints(Vec<Option<i64>>),
    Floats(Vec<Option<f64>>),
    Texts(Vec<Option<String>>),
    Bools(Vec<Option<bool>>),
}

impl Param {
    /// Converts one Rhai value; `index` is 1-based, for the error.
    pub fn from_dynamic(index: usize, value: &Dynamic) -> Result<Self, String> {
        if value.is_unit() {
            return Ok(Self::Null);
        }
        if let Ok(b) = value.as_bool() {
            return Ok(Self::Bool(b));
        }
        if let Ok(i) = value.as_int() {
            return Ok(Self::Int(i));
        }
        if let Ok(f) = value.as_float() {
            return Ok(Self::Float(f));
        }
        if value.is_string() || value.is_char() {
            return Ok(Self::Text(value.to_string()));
        }
        if value.is_blob() {
            return Ok(Self::Bytes(value.clone().cast::<Blob>()));
        }
        if let Some(ts) = value.clone().try_cast::<Timestamp>() {
            return Ok(Self::Timestamp(ts.0));
        }
        if value.is_map() {
            return Ok(Self::Json(crate::host::json::from_dynamic(value)));
        }
        if value.is_array() {
            let items = value.clone().cast::<Array>();
            return Ok(Self::array(&items)
                .unwrap_or_else(|| Self::Json(crate::host::json::from_dynamic(value))));
        }
        Err(format!(
            "parameter {index} is a {}, which cannot be bound (use (), bool, int, float, string, blob, timestamp, map or array)",
            value.type_name()
        ))
    }

    /// An array of one scalar type (nulls allowed) becomes a SQL array; anything else is JSON.
    /// An empty array binds as `text[]`.
    fn array(items: &[Dynamic]) -> Option<Self> {
        let typed = |test: fn(&Dynamic) -> bool| items.iter().all(|v| v.is_unit() || test(v));
        if typed(Dynamic::is_string) {
            return Some(Self::Texts(
                items
                    .iter()
                    .map(|v| (!v.is_unit()).then(|| v.to_string()))
                    .collect(),
            ));
        }
        if typed(Dynamic::is_int) {
            return Some(Self::Ints(items.iter().map(|v| v.as_int().ok()).collect()));
        }
        if typed(Dynamic::is_float) {
            return Some(Self::Floats(
                items.iter().map(|v| v.as_float().ok()).collect(),
            ));
        }
        if typed(Dynamic::is_bool) {
            return Some(Self::Bools(
                items.iter().map(|v| v.as_bool().ok()).collect(),
            ));
        }
        None
    }

    /// What the journal keeps of a parameter: long text and blobs are abbreviated.
    pub fn evidence(&self) -> serde_json::Value {
        use serde_json::json;
        const MAX: usize = 200;
        match self {
            Self::Null => serde_json::Value::Null,
            Self::Bool(b) => json!(b),
            Self::Int(i) => json!(i),
            Self::Float(f) => json!(f),
            Self::Text(text) if text.len() > MAX => {
                let cut = (0..=MAX)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                json!(format!("{}... ({} bytes)", &text[..cut], text.len()))
            }
            Self::Text(text) => json!(text),
            Self::Bytes(bytes) => json!(format!("<blob, {} bytes>", bytes.len())),
            Self::Json(value) => {
                let text = value.to_string();
                if text.len() > MAX {
                    json!(format!("<json, {} bytes>", text.len()))
                } else {
                    value.clone()
                }
            }
            Self::Timestamp(ts) => json!(rfc3339(ts)),
            Self::Ints(v) => json!(v),
            Self::Floats(v) => json!(v),
            Self::Texts(v) => json!(v),
            Self::Bools(v) => json!(v),
        }
    }
}

/// A NULL whose type PostgreSQL infers from the statement (type oid 0), so `insert into t (n)
/// values ($1)` with `()` works for a column of any type.
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(
        &self,
        _buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

pub fn bind_pg<'q>(
    query: Query<'q, Postgres, PgArguments>,
    param: &Param,
) -> Query<'q, Postgres, PgArguments> {
    match param.clone() {
        Param::Null => query.bind(UntypedNull),
        Param::Bool(v) => query.bind(v),
        Param::Int(v) => query.bind(v),
        Param::Float(v) => query.bind(v),
        Param::Text(v) => query.bind(v),
        Param::Bytes(v) => query.bind(v),
        Param::Json(v) => query.bind(sqlx::types::Json(v)),
        Param::Timestamp(v) => query.bind(v),
        Param::Ints(v) => query.bind(v),
        Param::Floats(v) => query.bind(v),
        Param::Texts(v) => query.bind(v),
        Param::Bools(v) => query.bind(v),
    }
}

/// SQLite has no array type: arrays bind as JSON text (usable with `json_each`).
pub fn bind_sqlite<'q>(
    query: Query<'q, Sqlite, SqliteArguments>,
    param: &Param,
) -> Query<'q, Sqlite, SqliteArguments> {
    match param.clone() {
        Param::Null => query.bind(None::<String>),
        Param::Bool(v) => query.bind(v),
        Param::Int(v) => query.bind(v),
        Param::Float(v) => query.bind(v),
        Param::Text(v) => query.bind(v),
        Param::Bytes(v) => query.bind(v),
        Param::Json(v) => query.bind(v.to_string()),
        Param::Timestamp(v) => query.bind(rfc3339(&v)),
        Param::Ints(v) => query.bind(serde_json::json!(v).to_string()),
        Param::Floats(v) => query.bind(serde_json::json!(v).to_string()),
        Param::Texts(v) => query.bind(serde_json::json!(v).to_string()),
        Param::Bools(v) => query.bind(serde_json::json!(v).to_string()),
    }
}

pub fn rfc3339(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn naive_rfc3339(ts: &NaiveDateTime) -> String {
    rfc3339(&ts.and_utc())
}

fn date_text(date: &NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

fn time_text(time: &NaiveTime) -> String {
    time.format("%H:%M:%S%.f").to_string()
}

fn opt<T>(value: Option<T>, convert: impl FnOnce(T) -> Dynamic) -> Dynamic {
    value.map_or(Dynamic::UNIT, convert)
}

fn array_of<T>(items: Vec<Option<T>>, convert: impl Fn(T) -> Dynamic) -> Dynamic {
    Dynamic::from_array(items.into_iter().map(|item| opt(item, &convert)).collect())
}

/// One PostgreSQL row as a map from column name to value.
pub fn pg_row(row: &PgRow) -> Result<Map, String> {
    let mut map = Map::new();
    for column in row.columns() {
        let value = pg_column(row, column.ordinal(), column.type_info()).map_err(|why| {
            format!(
                "column '{}' ({}): {why}",
                column.name(),
                column.type_info().name()
            )
        })?;
        map.insert(column.name().into(), value);
    }
    Ok(map)
}

/// The base type of a domain (domains over domains included).
fn base_type(type_info: &PgTypeInfo) -> &PgTypeInfo {
    match type_info.kind() {
        PgTypeKind::Domain(inner) => base_type(inner),
        _ => type_info,
    }
}

fn pg_column(row: &PgRow, index: usize, declared: &PgTypeInfo) -> Result<Dynamic, String> {
    let type_info = base_type(declared);
    macro_rules! get {
        ($ty:ty) => {
            row.try_get_unchecked::<Option<$ty>, _>(index)
                .map_err(|e| e.to_string())?
        };
    }
    let text = |v: String| Dynamic::from(v);
    let value = match type_info.name() {
        "VOID" => Dynamic::UNIT,
        "BOOL" => opt(get!(bool), Dynamic::from),
        "INT2" => opt(get!(i16), |v| Dynamic::from(i64::from(v))),
        "INT4" => opt(get!(i32), |v| Dynamic::from(i64::from(v))),
        "INT8" => opt(get!(i64), Dynamic::from),
        "OID" => opt(get!(sqlx::postgres::types::Oid), |v| {
            Dynamic::from(i64::from(v.0))
        }),
        "FLOAT4" => opt(get!(f32), |v| Dynamic::from(f64::from(v))),
        "FLOAT8" => opt(get!(f64), Dynamic::from),
        "NUMERIC" => {
            let raw = row.try_get_raw(index).map_err(|e| e.to_string())?;
            if raw.is_null() {
                Dynamic::UNIT
            } else {
                numeric_value(&numeric_text(pg_bytes(&raw)?)?)
            }
        }
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "UNKNOWN" | "CITEXT" => opt(get!(String), text),
        "TIMESTAMPTZ" => opt(get!(DateTime<Utc>), |v| text(rfc3339(&v))),
        "TIMESTAMP" => opt(get!(NaiveDateTime), |v| text(naive_rfc3339(&v))),
        "DATE" => opt(get!(NaiveDate), |v| text(date_text(&v))),
        "TIME" => opt(get!(NaiveTime), |v| text(time_text(&v))),
        "JSON" | "JSONB" => opt(get!(serde_json::Value), |v| {
            crate::host::json::to_dynamic(&v)
        }),
        "UUID" => opt(get!(uuid::Uuid), |v| text(v.to_string())),
        "BYTEA" => opt(get!(Vec<u8>), Dynamic::from_blob),
        "BOOL[]" => opt(get!(Vec<Option<bool>>), |v| array_of(v, Dynamic::from)),
        "INT2[]" => opt(get!(Vec<Option<i16>>), |v| {
            array_of(v, |x| Dynamic::from(i64::from(x)))
        }),
        "INT4[]" => opt(get!(Vec<Option<i32>>), |v| {
            array_of(v, |x| Dynamic::from(i64::from(x)))
        }),
        "INT8[]" => opt(get!(Vec<Option<i64>>), |v| array_of(v, Dynamic::from)),
        "FLOAT4[]" => opt(get!(Vec<Option<f32>>), |v| {
            array_of(v, |x| Dynamic::from(f64::from(x)))
        }),
        "FLOAT8[]" => opt(get!(Vec<Option<f64>>), |v| array_of(v, Dynamic::from)),
        "TEXT[]" | "VARCHAR[]" | "CHAR[]" | "NAME[]" => {
            opt(get!(Vec<Option<String>>), |v| array_of(v, text))
        }
        "TIMESTAMPTZ[]" => opt(get!(Vec<Option<DateTime<Utc>>>), |v| {
            array_of(v, |x| text(rfc3339(&x)))
        }),
        "TIMESTAMP[]" => opt(get!(Vec<Option<NaiveDateTime>>), |v| {
            array_of(v, |x| text(naive_rfc3339(&x)))
        }),
        "DATE[]" => opt(get!(Vec<Option<NaiveDate>>), |v| {
            array_of(v, |x| text(date_text(&x)))
        }),
        "UUID[]" => opt(get!(Vec<Option<uuid::Uuid>>), |v| {
            array_of(v, |x| text(x.to_string()))
        }),
        "JSON[]" | "JSONB[]" => opt(get!(Vec<Option<serde_json::Value>>), |v| {
            array_of(v, |x| crate::host::json::to_dynamic(&x))
        }),
        "BYTEA[]" => opt(get!(Vec<Option<Vec<u8>>>), |v| {
            array_of(v, Dynamic::from_blob)
        }),
        "NUMERIC[]" => {
            let raw = row.try_get_raw(index).map_err(|e| e.to_string())?;
            if raw.is_null() {
                Dynamic::UNIT
            } else {
                numeric_array(pg_bytes(&raw)?)?
            }
        }
        _ if matches!(type_info.kind(), PgTypeKind::Enum(_)) => opt(get!(String), text),
        other => {
            return Err(format!(
                "type {other} is not converted by sql; cast it in the query (for example `::text`)"
            ));
        }
    };
    Ok(value)
}

fn pg_bytes<'r>(raw: &sqlx::postgres::PgValueRef<'r>) -> Result<&'r [u8], String> {
    if raw.format() != PgValueFormat::Binary {
        return Err("expected a binary value".into());
    }
    raw.as_bytes().map_err(|e| e.to_string())
}

/// PostgreSQL's binary numeric: ndigits, weight, sign, dscale (i16/u16 each), then base-10000
/// digits. Returns the exact decimal text (`NaN`, `Infinity`, `-Infinity` for the specials).
pub fn numeric_text(bytes: &[u8]) -> Result<String, String> {
    let word = |i: usize| -> Result<u16, String> {
        bytes
            .get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric value".to_owned())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i64;
    let sign = word(2)?;
    let dscale = word(3)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<_, _>>()?;
    let digit = |index: i64| -> u16 {
        if index < 0 {
            0
        } else {
            digits.get(index as usize).copied().unwrap_or(0)
        }
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for index in 0..=weight {
            if index == 0 {
                text.push_str(&digit(index).to_string());
            } else {
                text.push_str(&format!("{:04}", digit(index)));
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut index = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(index)));
            index += 1;
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    if text == "-0" || (text.starts_with("-0") && text[1..].chars().all(|c| c == '0' || c == '.')) {
        text.remove(0);
    }
    Ok(text)
}

/// An integer when the numeric has no fraction and fits in i64; a float when the float prints
/// back as the same decimal; otherwise the exact text.
pub fn numeric_value(text: &str) -> Dynamic {
    if !text.contains('.')
        && let Ok(i) = text.parse::<i64>()
    {
        return Dynamic::from(i);
    }
    if let Ok(f) = text.parse::<f64>()
        && f.is_finite()
        && normalise_decimal(&f.to_string()) == normalise_decimal(text)
    {
        return Dynamic::from(f);
    }
    Dynamic::from(text.to_owned())
}

fn normalise_decimal(text: &str) -> String {
    let mut text = text.to_owned();
    if text.contains('.') {
        while text.ends_with('0') {
            text.pop();
        }
        if text.ends_with('.') {
            text.pop();
        }
    }
    if text == "-0" { "0".into() } else { text }
}

/// A one-dimensional numeric[] in binary form: ndim, flags, element oid, (length, lower bound)
/// per dimension, then each element as a length (-1 for NULL) and its bytes.
fn numeric_array(bytes: &[u8]) -> Result<Dynamic, String> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, size: usize) -> Result<&'a [u8], String> {
            if self.0.len() < size {
                return Err("truncated array".into());
            }
            let (head, rest) = self.0.split_at(size);
            self.0 = rest;
            Ok(head)
        }
        fn int(&mut self) -> Result<i32, String> {
            self.take(4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
    let mut cursor = Cursor(bytes);
    let dimensions = cursor.int()?;
    let _flags = cursor.int()?;
    let _element_oid = cursor.int()?;
    if dimensions == 0 {
        return Ok(Dynamic::from_array(Array::new()));
    }
    if dimensions != 1 {
        return Err("multi-dimensional arrays are not converted; use array_to_json(...)".into());
    }
    let length = cursor.int()?;
    let _lower_bound = cursor.int()?;
    let mut items = Array::new();
    for _ in 0..length {
        let size = cursor.int()?;
        if size < 0 {
            items.push(Dynamic::UNIT);
        } else {
            items.push(numeric_value(&numeric_text(cursor.take(size as usize)?)?));
        }
    }
    Ok(Dynamic::from_array(items))
}

/// One SQLite row. SQLite types values, not columns: the storage class decides, except that a
/// column declared BOOLEAN reads as bool. SQLite has no json, date or uuid types: those read as
/// the text they were stored as.
pub fn sqlite_row(row: &SqliteRow) -> Result<Map, String> {
    let mut map = Map::new();
    for column in row.columns() {
        let index = column.ordinal();
        let raw = row.try_get_raw(index).map_err(|e| e.to_string())?;
        let declared_bool = column.type_info().name() == "BOOLEAN";
        let value = if raw.is_null() {
            Dynamic::UNIT
        } else {
            let storage = raw.type_info().name().to_owned();
            let failed = |e: sqlx::Error| format!("column '{}' ({storage}): {e}", column.name());
            match storage.as_str() {
                "INTEGER" | "BOOLEAN" if declared_bool => {
                    Dynamic::from(row.try_get_unchecked::<bool, _>(index).map_err(failed)?)
                }
                "INTEGER" | "BOOLEAN" => {
                    Dynamic::from(row.try_get_unchecked::<i64, _>(index).map_err(failed)?)
                }
                "REAL" => Dynamic::from(row.try_get_unchecked::<f64, _>(index).map_err(failed)?),
                "BLOB" => {
                    Dynamic::from_blob(row.try_get_unchecked::<Vec<u8>, _>(index).map_err(failed)?)
                }
                _ => Dynamic::from(row.try_get_unchecked::<String, _>(index).map_err(failed)?),
            }
        };
        map.insert(column.name().into(), value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> String {
        let mut bytes = Vec::new();
        for word in [ndigits, weight as u16, sign, dscale].iter().chain(digits) {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        numeric_text(&bytes).unwrap()
    }

    #[test]
    fn numeric_binary_to_text() {
        assert_eq!(numeric(0, 0, 0, 0, &[]), "0");
        assert_eq!(numeric(1, 0, 0, 0, &[42]), "42");
        assert_eq!(numeric(2, 1, 0, 0, &[1, 2345]), "12345");
        assert_eq!(numeric(2, 0, 0x4000, 2, &[1, 5000]), "-1.50");
        assert_eq!(numeric(1, -1, 0, 4, &[1]), "0.0001");
        assert_eq!(numeric(1, -2, 0, 5, &[1000]), "0.00001");
        assert_eq!(numeric(0, 0, 0, 2, &[]), "0.00");
        assert_eq!(numeric(0, 0, 0xC000, 0, &[]), "NaN");
    }

    #[test]
    fn numeric_values_keep_precision() {
        assert!(numeric_value("12").is_int());
        assert_eq!(numeric_value("1.50").as_float().unwrap(), 1.5);
        assert_eq!(numeric_value("0.1").as_float().unwrap(), 0.1);
        assert!(numeric_value("12345678901234567890.123456789").is_string());
        assert!(numeric_value("99999999999999999999").is_string());
        assert!(numeric_value("NaN").is_string());
    }
}
