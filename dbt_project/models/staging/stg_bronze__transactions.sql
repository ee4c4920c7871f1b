with

source as (

    select * from {{ source('bronze', 'transactions') }}
    -- replay: rebuild from bronze as it stood up to a date (`--vars '{replay_to: 2026-11-01}'`)
    where _event_date <= cast('{{ var("replay_to", "9999-12-31") }}' as date)

),

renamed as (

    select

        ----------  ids (an empty string is a missing id)
        nullif(transaction_id, '') as transaction_id,
        nullif(user_id, '') as user_id,
        nullif(card_id, '') as card_id,
        nullif(merchant_id, '') as merchant_id,
        nullif(counterparty_id, '') as counterparty_id,
        nullif(device_id, '') as device_id,

        ---------- strings
        merchant_category,
        currency,
        channel,
        ip,
        country,

        ---------- numerics
        cast(amount as double) as amount,

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
