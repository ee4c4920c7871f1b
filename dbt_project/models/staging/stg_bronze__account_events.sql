with

source as (

    select * from {{ source('bronze', 'account_events') }}
    -- replay: rebuild from bronze as it stood up to a date (`--vars '{replay_to: 2026-11-01}'`)
    where _event_date <= cast('{{ var("replay_to", "9999-12-31") }}' as date)

),

renamed as (

    select

        ----------  ids (an empty string is a missing id)
        nullif(event_id, '') as event_id,
        nullif(user_id, '') as user_id,
        nullif(device_id, '') as device_id,

        ---------- strings
        event_type,
        ip,
        country,

        ---------- timestamps
        cast(event_time as timestamptz) as event_time,

        ---------- lineage
        cast(schema_version as integer) as schema_version,
        _topic as kafka_topic,
        cast(_partition as integer) as kafka_partition,
        cast(_offset as bigint) as kafka_offset,
        cast(_ingested_at as timestamptz) as ingested_at

    from source

)

select * from renamed
